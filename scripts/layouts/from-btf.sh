#!/bin/sh
# Turn a BTF blob into an ELF with the same types as DWARF, which
# gen_layout_header.py (and drgn) can read:  from-btf.sh BTF OUT.elf
set -eu
btf=$1 out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bpftool btf dump file "$btf" format c > "$tmp/vmlinux.h"
printf '#define BPF_NO_PRESERVE_ACCESS_INDEX\n#include "vmlinux.h"\n' > "$tmp/all.c"
gcc -g -c -fno-eliminate-unused-debug-types -o "$tmp/all.o" "$tmp/all.c"
ld -r -o "$out" "$tmp/all.o"
