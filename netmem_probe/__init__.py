"""netmem-probe: drgn programs for page pools and network memory."""
