"""The host: what it can run (CPU flags, QEMU, binfmt), CPUID masking, its files and processes."""
