package offload

// The program's object and its Go loader are committed, so building and
// testing need no clang; CI regenerates them and fails on a difference.
// The -I directories give linux/bpf.h its asm/types.h on Debian (only the
// one of this machine's architecture exists; the others are ignored).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel -type c2p_key -type c2p_val -type p2c_key -type p2c_val -type counters offload bpf/offload.c
