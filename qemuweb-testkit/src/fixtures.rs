//! Disk image fixtures generated with qemu-img (filled in by the qcow2 work).
