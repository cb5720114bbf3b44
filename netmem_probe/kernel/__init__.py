"""drgn helpers for page pools and network memory, one module per kernel object family."""
