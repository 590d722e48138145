// QemuWeb aarch64 test guest for QEMU's `virt` machine (GNU as syntax).
//
// Built as a raw arm64 Linux "Image": the 64-byte header below carries the magic
// "ARM\x64" and text_offset 0x80000, so `-kernel` loads it at RAM base + 0x80000
// (0x40080000 on `virt`), enters it at offset 0 on the boot CPU with the MMU off and
// keeps any secondary CPUs parked in PSCI. The code is position-independent anyway.
//
// It programs the PL011 UART at 0x09000000 (polled, no interrupts), prints the banner
// "QEMUWEB-GUEST aarch64 v1", looks for a virtio block device on the PCIe bus of `virt`
// (ECAM at 0x40_1000_0000, bus 0; its BAR 4 placed at 0x10000000; the virtio 1.0 PCI
// capabilities; one split virtqueue of 4 entries, polled), then loops: prompt "> ", read
// a line (CR or LF ends it, typed characters are not echoed), reply with one line:
//   echo TEXT    -> TEXT
//   read N       -> SECTOR N CRC32 XXXXXXXX  (CRC-32/ISO-HDLC of the 512 bytes, as zlib)
//   write N BB   -> WROTE SECTOR N FILL BB   (every byte of sector N set to hex byte BB)
//   info         -> DISK SECTORS N           (the device's capacity)
//   gfx          -> GFX 640x480              (the display, below: the pattern
//                   pixel (x, y) = colour ((x >> 5) xor (y >> 4)) and 7, colour i being
//                   R = bit 2, G = bit 1, B = bit 0 of i, each 0 or 255)
//   hline Y BB   -> HLINE Y FILL BB          (row Y, 0-479, set to colour BB, 00-07, and
//                   only that row sent to the host: a dirty-rectangle update)
//   redraw N     -> REDRAW N                 (the whole screen filled N times, 1-65535,
//                   fill k (from 0) in colour 1 + k mod 7, each sent and flushed whole)
//   anything else (not empty) -> ERR unknown command
// The display is the first virtio-gpu-pci (1af4:1050) on the bus, driven on `gfx` only
// (opt-in, as the x86 guest's VGA modes): its BAR 4 placed at 0x10100000, the virtio 1.0
// capabilities, the control queue of 4 entries, polled. The first `gfx` prints
// "GPU SCANOUT WxH" (the host's preferred size, GET_DISPLAY_INFO), then creates a 640x480
// B8G8R8X8 resource backed by a framebuffer in guest RAM at 0x41000000 (RAM base +
// 16 MiB, clear of the image and of the DTB QEMU places at RAM base + min(RAM / 2,
// 128 MiB)), and sets it as scanout 0. Every drawing is followed by TRANSFER_TO_HOST_2D
// and RESOURCE_FLUSH of the rectangle it changed. Errors: "ERR no gpu", "ERR gpu init"
// (feature or queue negotiation failed), "ERR gpu CCCC RRRR" (command CCCC answered
// with RRRR, 0000 when the device never answered), "ERR not in graphics mode" (`hline`
// or `redraw` before `gfx`).
// Errors: "ERR bad number" (also a sector past the end), "ERR protected sector" (a write
// below sector 64, as the x86 guest), "ERR no disk", "ERR disk status XX" (the virtio
// status byte). The replies are the x86 guest's, so the same oracles check both.
// Every reply ends with CR LF. With the MMU off all data accesses are naturally aligned.

    .equ UART_BASE, 0x09000000
    .equ UART_DR,   0x00
    .equ UART_FR,   0x18
    .equ UART_LCRH, 0x2c
    .equ UART_CR,   0x30
    .equ FR_RXFE,   0x10
    .equ FR_TXFF,   0x20
    .equ LINE_MAX,  120

    .equ ECAM_HI,   0x40            // ECAM base 0x40_1000_0000 = (ECAM_HI << 32) | ECAM_LO
    .equ ECAM_LO,   0x10000000
    .equ BAR_BASE,  0x10000000      // where BAR 4 (the virtio structures) is placed
    .equ GPU_BAR,   0x10100000      // where the GPU's BAR 4 is placed
    .equ FB_BASE,   0x41000000      // the framebuffer
    .equ FB_W,      640
    .equ FB_H,      480
    .equ FB_STRIDE, FB_W * 4
    .equ FB_FORMAT, 2               // VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM: 0x00RRGGBB words
    .equ GPU_RES,   1               // the resource id
    .equ VENDOR_VIRTIO, 0x1af4
    .equ DATA_START, 64             // first sector `write` may change
    .equ QSZ,       4               // virtqueue entries

    // virtio_pci_common_cfg offsets
    .equ C_DFSEL,   0
    .equ C_DF,      4
    .equ C_GFSEL,   8
    .equ C_GF,      12
    .equ C_STATUS,  20
    .equ C_QSEL,    22
    .equ C_QSIZE,   24
    .equ C_QENABLE, 28
    .equ C_QNOFF,   30
    .equ C_QDESC,   32
    .equ C_QDRIVER, 40
    .equ C_QDEVICE, 48

    // the virtqueue area (vq_area, 4 KiB aligned)
    .equ VQ_DESC,   0
    .equ VQ_AVAIL,  64
    .equ VQ_USED,   128
    .equ VQ_HDR,    256
    .equ VQ_STATUS, 272
    .equ VQ_BUF,    512
    // the GPU's control queue area (gq_area, after vq_area): VQ_DESC/AVAIL/USED, then
    .equ GQ_REQ,    256             // the request (at most 64 bytes)
    .equ GQ_RESP,   512             // the response (at most 512 bytes)
    // gpu_state
    .equ GS_ON,     0               // 1 once the scanout is set
    .equ GS_NOTIFY, 8               // the control queue's notify address
    .equ GS_AVAIL,  16              // the next avail index

    .text
    .global _start
_start:
    b       entry                   // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   image_end - _start      // image_size
    .quad   0x2                     // flags: little-endian, 4K pages
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

entry:
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    cbnz    x0, park
    adr     x0, stack_top
    mov     sp, x0
    mov     x19, #UART_BASE
    str     wzr, [x19, #UART_CR]    // disable while configuring
    mov     w0, #0x60               // 8 bits, FIFOs off
    str     w0, [x19, #UART_LCRH]
    mov     w0, #0x301              // UARTEN | TXE | RXE
    str     w0, [x19, #UART_CR]
    adr     x0, msg_banner
    bl      puts
    bl      disk_init               // x22 = common cfg or 0 (no disk)

main_loop:
    adr     x0, stack_top           // errors come here from nested calls too
    mov     sp, x0
    adr     x0, msg_prompt
    bl      puts
    adr     x20, line_buf
    mov     x21, #0                 // length
read_char:
    ldr     w1, [x19, #UART_FR]
    tst     w1, #FR_RXFE
    b.ne    read_char
    ldr     w1, [x19, #UART_DR]
    and     w1, w1, #0xff
    cmp     w1, #13
    b.eq    line_done
    cmp     w1, #10
    b.eq    line_done
    cmp     w1, #8
    b.eq    backspace
    cmp     w1, #0x7f
    b.eq    backspace
    cmp     w1, #0x20
    b.lo    read_char
    cmp     x21, #LINE_MAX
    b.hs    read_char
    strb    w1, [x20, x21]
    add     x21, x21, #1
    b       read_char
backspace:
    cbz     x21, read_char
    sub     x21, x21, #1
    b       read_char

line_done:
    strb    wzr, [x20, x21]
    cbz     x21, main_loop
    adr     x0, word_echo
    bl      match_word
    cbnz    x0, echo_out
    adr     x0, word_read
    bl      match_word
    cbnz    x0, cmd_read
    adr     x0, word_write
    bl      match_word
    cbnz    x0, cmd_write
    adr     x0, word_info
    bl      match_word
    cbnz    x0, cmd_info
    adr     x0, word_gfx
    bl      match_word
    cbnz    x0, cmd_gfx
    adr     x0, word_hline
    bl      match_word
    cbnz    x0, cmd_hline
    adr     x0, word_redraw
    bl      match_word
    cbnz    x0, cmd_redraw
unknown:
    adr     x0, msg_unknown
    bl      puts
    b       main_loop

echo_out:
    mov     x0, x2
    bl      puts
    b       reply_end

// info -> DISK SECTORS N
cmd_info:
    cbz     x22, no_disk
    adr     x0, msg_info
    bl      puts
    mov     x0, x25
    bl      put_dec
    b       reply_end

// read N -> SECTOR N CRC32 XXXXXXXX
cmd_read:
    bl      parse_sector            // x23 = N, x2 after it
    ldrb    w4, [x2]
    cbnz    w4, bad_number
    mov     w0, #0                  // VIRTIO_BLK_T_IN
    bl      disk_io
    cbnz    x0, disk_error
    adr     x0, msg_sector
    bl      puts
    mov     x0, x23
    bl      put_dec
    adr     x0, msg_crc
    bl      puts
    bl      crc_buf
    bl      put_hex32
    b       reply_end

// write N BB -> WROTE SECTOR N FILL BB
cmd_write:
    bl      parse_sector
    bl      parse_fill              // w24 = BB
    cmp     x23, #DATA_START
    b.lo    protected
    adr     x0, vq_area
    add     x0, x0, #VQ_BUF
    mov     x1, #512
1:  strb    w24, [x0], #1
    subs    x1, x1, #1
    b.ne    1b
    mov     w0, #1                  // VIRTIO_BLK_T_OUT
    bl      disk_io
    cbnz    x0, disk_error
    adr     x0, msg_wrote
    b       reply_fill

no_disk:
    adr     x0, msg_no_disk
    bl      puts
    b       main_loop
bad_number:
    adr     x0, msg_bad_number
    bl      puts
    b       main_loop
protected:
    adr     x0, msg_protected
    bl      puts
    b       main_loop
reply_fill:                         // the reply "<string x0>N FILL BB", N = x23, BB = w24
    bl      puts
    mov     x0, x23
    bl      put_dec
    adr     x0, msg_fill
    bl      puts
    mov     w0, w24
    bl      put_hex8
    b       reply_end
disk_error:                         // w0 = the virtio status byte
    mov     w24, w0
    adr     x0, msg_disk_error
    bl      puts
    mov     w0, w24
    bl      put_hex8
reply_end:
    adr     x0, msg_crlf
    bl      puts
    b       main_loop

// Does the line start with the word at x0, then the end or a space? x0 = 1 if so, with
// x2 after the space (or at the end); else x0 = 0.
match_word:
    mov     x2, x20
1:  ldrb    w3, [x0], #1
    cbz     w3, 2f
    ldrb    w4, [x2], #1
    cmp     w3, w4
    b.ne    3f
    b       1b
2:  ldrb    w4, [x2]
    cbz     w4, 4f
    cmp     w4, #0x20
    b.ne    3f
    add     x2, x2, #1
4:  mov     x0, #1
    ret
3:  mov     x0, #0
    ret

// A decimal sector number at x2 -> x23 (x2 after it). Refuses (bad_number) no digits,
// overflow, or with a disk, a sector at or past its end; with no disk, goes to no_disk.
parse_sector:
    cbz     x22, no_disk
    stp     x29, x30, [sp, #-16]!
    bl      parse_dec
    ldp     x29, x30, [sp], #16
    mov     x23, x0
    cmp     x23, x25
    b.hs    bad_number
    ret

// " BB" at x2, the end of the line after it: two hex digits -> w24, else bad_number.
parse_fill:
    ldrb    w4, [x2], #1
    cmp     w4, #0x20
    b.ne    bad_number
    mov     w24, #0
    mov     x5, #2
1:  ldrb    w4, [x2], #1
    sub     w6, w4, #'0'
    cmp     w6, #9
    b.ls    2f
    orr     w4, w4, #0x20           // lower case
    sub     w6, w4, #'a'
    cmp     w6, #5
    b.hi    bad_number
    add     w6, w6, #10
2:  lsl     w24, w24, #4
    orr     w24, w24, w6
    subs    x5, x5, #1
    b.ne    1b
    ldrb    w4, [x2]
    cbnz    w4, bad_number
    ret

// x0 -> decimal on the UART.
put_dec:
    stp     x29, x30, [sp, #-48]!
    add     x1, sp, #40             // digits are written backwards from here
    strb    wzr, [x1]
    mov     x6, #10
1:  udiv    x7, x0, x6
    msub    x8, x7, x6, x0
    add     w8, w8, #'0'
    sub     x1, x1, #1
    strb    w8, [x1]
    mov     x0, x7
    cbnz    x0, 1b
    mov     x0, x1
    bl      puts
    ldp     x29, x30, [sp], #48
    ret

// w0 -> 8 upper-case hex digits on the UART.
put_hex32:
    mov     w9, w0
    mov     x10, #28
    b       put_hex
// w0 -> 4 upper-case hex digits.
put_hex16:
    mov     w9, w0
    mov     x10, #12
    b       put_hex
// w0 -> 2 upper-case hex digits.
put_hex8:
    mov     w9, w0
    mov     x10, #4
put_hex:
    lsr     w1, w9, w10
    and     w1, w1, #0xf
    cmp     w1, #10
    add     w2, w1, #'0'
    add     w3, w1, #'A' - 10
    csel    w1, w2, w3, lo
5:  ldr     w2, [x19, #UART_FR]
    tst     w2, #FR_TXFF
    b.ne    5b
    str     w1, [x19, #UART_DR]
    subs    x10, x10, #4
    b.ge    put_hex
    ret

// CRC-32 (reflected, polynomial 0xEDB88320, init and final xor 0xFFFFFFFF) of the 512
// bytes of the sector buffer -> w0.
crc_buf:
    adr     x1, vq_area
    add     x1, x1, #VQ_BUF
    mov     x2, #512
    mov     w0, #0xffffffff
    movz    w5, #0x8320
    movk    w5, #0xedb8, lsl #16
1:  ldrb    w3, [x1], #1
    eor     w0, w0, w3
    mov     x4, #8
2:  and     w6, w0, #1
    lsr     w0, w0, #1
    cbz     w6, 3f
    eor     w0, w0, w5
3:  subs    x4, x4, #1
    b.ne    2b
    subs    x2, x2, #1
    b.ne    1b
    mvn     w0, w0
    ret

// Finds a virtio block device on PCI bus 0 and brings it up. Sets x22 = its common cfg
// (0 if there is none or it fails), x25 = its capacity in sectors, x26 = its queue's
// notify address, x27 = the next avail index.
disk_init:
    stp     x29, x30, [sp, #-16]!
    mov     x22, #0
    mov     x25, #0
    mov     w0, #0x1001             // transitional virtio-blk
    mov     w1, #0x1042             // modern virtio-blk
    bl      pci_find
    cbz     x12, 1f
    mov     x9, #BAR_BASE
    adr     x17, vq_area
    bl      vpci_setup
    cbz     x13, 1f
    mov     x26, x0
    // Capacity: the first 64-bit field of the device configuration.
    ldr     w0, [x16]
    ldr     w1, [x16, #4]
    orr     x25, x0, x1, lsl #32
    mov     x27, #0
    mov     x22, x13
1:  ldp     x29, x30, [sp], #16
    ret

// The first virtio device (vendor 1af4) on PCI bus 0 with device id w0 or w1 -> x12 =
// its configuration space (0 if there is none). Clobbers x2-x4, x10, x11.
pci_find:
    movz    x10, #ECAM_HI, lsl #32
    movk    x10, #(ECAM_LO >> 16), lsl #16
    mov     x11, #0                 // device number
1:  lsl     x12, x11, #15
    add     x12, x12, x10           // config space of 00:dev.0
    ldr     w2, [x12]
    and     w3, w2, #0xffff
    mov     w4, #VENDOR_VIRTIO
    cmp     w3, w4
    b.ne    2f
    lsr     w3, w2, #16
    cmp     w3, w0
    b.eq    3f
    cmp     w3, w1
    b.eq    3f
2:  add     x11, x11, #1
    cmp     x11, #32
    b.lo    1b
    mov     x12, #0
3:  ret

// Brings up the virtio 1.0 PCI device at config space x12 with its BAR 4 at x9 and
// queue 0 (QSZ entries) in the 4 KiB area x17: x13 = its common cfg (0 on failure),
// x16 = its device cfg, x0 = queue 0's notify address. Only VIRTIO_F_VERSION_1 is
// accepted. Clobbers x1-x8, x14, x15.
vpci_setup:
    // BAR 4 (64-bit memory) at x9, then memory decoding and bus mastering on.
    str     w9, [x12, #0x20]
    lsr     x0, x9, #32
    str     w0, [x12, #0x24]
    ldr     w0, [x12, #0x04]
    orr     w0, w0, #0x6
    str     w0, [x12, #0x04]
    // Walk the capability list for the virtio structures (cfg_type 1 common, 2 notify,
    // 4 device), all expected in BAR 4.
    mov     x13, #0                 // common
    mov     x14, #0                 // notify base
    mov     x15, #0                 // notify multiplier
    mov     x16, #0                 // device cfg
    mov     x6, #48                 // at most this many capabilities
    ldrb    w1, [x12, #0x34]
3:  cbz     w1, 6f
    subs    x6, x6, #1
    b.eq    6f
    and     w1, w1, #0xfc
    add     x2, x12, x1
    ldrb    w3, [x2]                // cap id
    cmp     w3, #0x09               // vendor specific
    b.ne    5f
    ldrb    w4, [x2, #4]            // bar
    cmp     w4, #4
    b.ne    5f
    ldrb    w3, [x2, #3]            // cfg_type
    ldr     w5, [x2, #8]            // offset in the BAR
    add     x5, x5, x9
    cmp     w3, #1
    b.ne    4f
    mov     x13, x5
4:  cmp     w3, #2
    b.ne    7f
    mov     x14, x5
    ldr     w15, [x2, #16]
7:  cmp     w3, #4
    b.ne    5f
    mov     x16, x5
5:  ldrb    w1, [x2, #1]            // next
    b       3b
6:  cbz     x13, vpci_fail
    cbz     x14, vpci_fail
    cbz     x16, vpci_fail
    // Reset (bounded wait), ACKNOWLEDGE, DRIVER.
    strb    wzr, [x13, #C_STATUS]
    movz    x6, #0x100, lsl #16
8:  ldrb    w0, [x13, #C_STATUS]
    cbz     w0, 9f
    subs    x6, x6, #1
    b.ne    8b
    b       vpci_fail
9:  mov     w0, #1
    strb    w0, [x13, #C_STATUS]
    mov     w0, #3
    strb    w0, [x13, #C_STATUS]
    // Features: only VIRTIO_F_VERSION_1 (bit 32).
    mov     w0, #1
    str     w0, [x13, #C_DFSEL]
    ldr     w0, [x13, #C_DF]
    tbz     w0, #0, vpci_fail
    mov     w0, #1
    str     w0, [x13, #C_GFSEL]
    str     w0, [x13, #C_GF]
    str     wzr, [x13, #C_GFSEL]
    str     wzr, [x13, #C_GF]
    mov     w0, #0xb                // ... | FEATURES_OK
    strb    w0, [x13, #C_STATUS]
    ldrb    w0, [x13, #C_STATUS]
    tbz     w0, #3, vpci_fail
    // Queue 0: QSZ entries in x17.
    strh    wzr, [x13, #C_QSEL]
    ldrh    w0, [x13, #C_QSIZE]
    cmp     w0, #QSZ
    b.lo    vpci_fail
    mov     w0, #QSZ
    strh    w0, [x13, #C_QSIZE]
    add     x2, x17, #VQ_DESC
    str     w2, [x13, #C_QDESC]
    lsr     x3, x2, #32
    str     w3, [x13, #C_QDESC + 4]
    add     x2, x17, #VQ_AVAIL
    str     w2, [x13, #C_QDRIVER]
    lsr     x3, x2, #32
    str     w3, [x13, #C_QDRIVER + 4]
    add     x2, x17, #VQ_USED
    str     w2, [x13, #C_QDEVICE]
    lsr     x3, x2, #32
    str     w3, [x13, #C_QDEVICE + 4]
    ldrh    w0, [x13, #C_QNOFF]
    mul     x0, x0, x15
    add     x7, x14, x0
    mov     w0, #1
    strh    w0, [x13, #C_QENABLE]
    mov     w0, #0xf                // ... | DRIVER_OK
    strb    w0, [x13, #C_STATUS]
    mov     x0, x7
    ret
vpci_fail:
    mov     x13, #0
    ret

// One request on sector x23 of type w0 (0 read into / 1 write from the sector buffer).
// Returns x0 = 0, or the virtio status byte (0xff if the device never answered).
disk_io:
    adr     x1, vq_area
    // The request header: type, reserved, sector.
    str     w0, [x1, #VQ_HDR]
    str     wzr, [x1, #VQ_HDR + 4]
    str     x23, [x1, #VQ_HDR + 8]
    mov     w2, #0xff
    strb    w2, [x1, #VQ_STATUS]
    // Descriptor 0: the header (device reads), next 1.
    add     x2, x1, #VQ_HDR
    str     x2, [x1, #VQ_DESC]
    mov     w2, #16
    str     w2, [x1, #VQ_DESC + 8]
    mov     w2, #1                  // NEXT
    strh    w2, [x1, #VQ_DESC + 12]
    strh    w2, [x1, #VQ_DESC + 14]
    // Descriptor 1: the sector (the device writes it for a read), next 2.
    add     x2, x1, #VQ_BUF
    str     x2, [x1, #VQ_DESC + 16]
    mov     w2, #512
    str     w2, [x1, #VQ_DESC + 24]
    cmp     w0, #0
    mov     w2, #3                  // NEXT | WRITE
    mov     w3, #1                  // NEXT
    csel    w2, w2, w3, eq
    strh    w2, [x1, #VQ_DESC + 28]
    mov     w2, #2
    strh    w2, [x1, #VQ_DESC + 30]
    // Descriptor 2: the status byte (the device writes it).
    add     x2, x1, #VQ_STATUS
    str     x2, [x1, #VQ_DESC + 32]
    mov     w2, #1
    str     w2, [x1, #VQ_DESC + 40]
    mov     w2, #2                  // WRITE
    strh    w2, [x1, #VQ_DESC + 44]
    strh    wzr, [x1, #VQ_DESC + 46]
    // Offer descriptor 0 in the avail ring, then notify queue 0.
    ldrh    w4, [x1, #VQ_USED + 2]  // used idx before
    and     x2, x27, #(QSZ - 1)
    add     x3, x1, #VQ_AVAIL + 4
    strh    wzr, [x3, x2, lsl #1]
    add     x27, x27, #1
    dmb     sy
    strh    w27, [x1, #VQ_AVAIL + 2]
    dsb     sy
    strh    wzr, [x26]
    // Poll the used ring (2^32 tries: minutes even when the host is slow, then give up).
    movz    x5, #1, lsl #32
1:  ldrh    w6, [x1, #VQ_USED + 2]
    cmp     w6, w4
    b.ne    2f
    subs    x5, x5, #1
    b.ne    1b
    mov     x0, #0xff
    ret
2:  dmb     sy
    ldrb    w0, [x1, #VQ_STATUS]
    ret

// gfx: the display brought up (the first time), the pattern drawn and sent whole.
cmd_gfx:
    bl      gpu_setup
    bl      draw_pattern
    bl      flush_all
    adr     x0, msg_gfx
    bl      puts
    b       main_loop

// hline Y BB: row Y in colour BB, only that row sent to the host.
cmd_hline:
    bl      parse_dec
    mov     x23, x0
    cmp     x23, #FB_H
    b.hs    bad_number
    bl      parse_fill              // w24 = BB
    cmp     w24, #7
    b.hi    bad_number
    bl      need_gfx
    adr     x9, palette
    ldr     w4, [x9, w24, uxtw #2]
    mov     x1, x23
    mov     x3, #1
    bl      fill_rows
    mov     x0, #0
    mov     x1, x23
    mov     x2, #FB_W
    mov     x3, #1
    bl      gpu_flush
    adr     x0, msg_hline
    b       reply_fill

// redraw N: the whole screen filled N times, fill k in colour 1 + k mod 7, each sent and
// flushed whole.
cmd_redraw:
    bl      parse_dec
    mov     x23, x0
    ldrb    w4, [x2]
    cbnz    w4, bad_number
    cbz     x23, bad_number
    mov     x0, #0xffff
    cmp     x23, x0
    b.hi    bad_number
    bl      need_gfx
    mov     x24, #0                 // k
1:  mov     x5, #7
    udiv    x6, x24, x5
    msub    x6, x6, x5, x24
    add     x6, x6, #1
    adr     x9, palette
    ldr     w4, [x9, x6, lsl #2]
    mov     x1, #0
    mov     x3, #FB_H
    bl      fill_rows
    bl      flush_all
    add     x24, x24, #1
    cmp     x24, x23
    b.lo    1b
    adr     x0, msg_redraw
    bl      puts
    mov     x0, x23
    bl      put_dec
    b       reply_end

// Refuses (ERR not in graphics mode) until `gfx` has set the scanout.
need_gfx:
    adr     x5, gpu_state
    ldr     x5, [x5, #GS_ON]
    cbz     x5, 1f
    ret
1:  adr     x0, msg_not_gfx
    bl      puts
    b       main_loop

// A decimal number at x2 -> x0 (x2 after it); no digits or past 64 bits: bad_number.
// Clobbers x4-x7.
parse_dec:
    mov     x0, #0
    mov     x5, #0                  // digits seen
    mov     x6, #10
1:  ldrb    w4, [x2]
    sub     w4, w4, #'0'
    cmp     w4, #9
    b.hi    2f
    umulh   x7, x0, x6
    cbnz    x7, bad_number
    mul     x0, x0, x6
    adds    x0, x0, x4
    b.cs    bad_number
    add     x2, x2, #1
    add     x5, x5, #1
    b       1b
2:  cbz     x5, bad_number
    ret

// The 32-bit field at offset `off` of the GPU request x1 set to `value` (clobbers w2).
.macro req_word off, value
    mov     w2, #\value
    str     w2, [x1, #\off]
.endm

// The GPU request (`len` bytes) sent by gpu_cmd, answered with the type `resp`
// (default RESP_OK_NODATA).
.macro gpu_send len, resp=0x1100
    mov     x0, #\len
    mov     w8, #\resp
    bl      gpu_cmd
.endm

// Finds the virtio-gpu, brings it up and makes a framebuffer resource its scanout 0,
// once; later calls return at once. On any failure: the error line, then the command loop.
gpu_setup:
    stp     x29, x30, [sp, #-16]!
    adr     x5, gpu_state
    ldr     x0, [x5, #GS_ON]
    cbnz    x0, 9f
    mov     w0, #0x1050             // virtio-gpu (modern only)
    mov     w1, #0x1050
    bl      pci_find
    cbz     x12, no_gpu
    mov     x9, #GPU_BAR
    adr     x17, gq_area
    bl      vpci_setup
    cbz     x13, gpu_init_fail
    adr     x5, gpu_state
    str     x0, [x5, #GS_NOTIFY]
    str     xzr, [x5, #GS_AVAIL]
    // GET_DISPLAY_INFO: the host's preferred size of scanout 0, for the log.
    mov     w0, #0x0100
    bl      gpu_hdr
    gpu_send 24, 0x1101             // RESP_OK_DISPLAY_INFO
    adr     x0, msg_scanout
    bl      puts
    adr     x1, gq_area
    ldr     w0, [x1, #GQ_RESP + 32] // pmodes[0].r.width
    bl      put_dec
    adr     x0, msg_by
    bl      puts
    adr     x1, gq_area
    ldr     w0, [x1, #GQ_RESP + 36] // pmodes[0].r.height
    bl      put_dec
    adr     x0, msg_crlf
    bl      puts
    // RESOURCE_CREATE_2D: resource GPU_RES, FB_W x FB_H.
    mov     w0, #0x0101
    bl      gpu_hdr
    req_word 24, GPU_RES
    req_word 28, FB_FORMAT
    req_word 32, FB_W
    req_word 36, FB_H
    gpu_send 40
    // RESOURCE_ATTACH_BACKING: one entry, the framebuffer.
    mov     w0, #0x0106
    bl      gpu_hdr
    req_word 24, GPU_RES
    req_word 28, 1
    mov     x2, #FB_BASE
    str     x2, [x1, #32]
    mov     w2, #FB_STRIDE
    mov     w3, #FB_H
    mul     w2, w2, w3
    str     w2, [x1, #40]
    gpu_send 48
    // SET_SCANOUT: scanout 0 shows the whole resource.
    mov     w0, #0x0103
    bl      gpu_hdr
    req_word 32, FB_W
    req_word 36, FB_H
    req_word 44, GPU_RES
    gpu_send 48
    adr     x5, gpu_state
    mov     x0, #1
    str     x0, [x5, #GS_ON]
9:  ldp     x29, x30, [sp], #16
    ret
no_gpu:
    adr     x0, msg_no_gpu
    bl      puts
    b       main_loop
gpu_init_fail:
    adr     x0, msg_gpu_init
    bl      puts
    b       main_loop

// A request of type w0 started at gq_area + GQ_REQ: its 64 bytes zeroed, the type set.
// Returns x1 = the request. Clobbers x2.
gpu_hdr:
    adr     x1, gq_area
    add     x1, x1, #GQ_REQ
    mov     x2, #0
1:  str     xzr, [x1, x2]
    add     x2, x2, #8
    cmp     x2, #64
    b.lo    1b
    str     w0, [x1]
    ret

// Sends the request at gq_area + GQ_REQ (x0 bytes) on the control queue, with a 512-byte
// response buffer, and polls for the answer (2^32 tries, then gives up). Returns if the
// response's type is w8; else "ERR gpu CCCC RRRR" and the command loop. Clobbers x0-x7.
gpu_cmd:
    adr     x1, gq_area
    str     wzr, [x1, #GQ_RESP]     // type 0 until the device answers
    // Descriptor 0: the request (the device reads it), next 1.
    add     x2, x1, #GQ_REQ
    str     x2, [x1, #VQ_DESC]
    str     w0, [x1, #VQ_DESC + 8]
    mov     w2, #1                  // NEXT
    strh    w2, [x1, #VQ_DESC + 12]
    strh    w2, [x1, #VQ_DESC + 14]
    // Descriptor 1: the response (the device writes it).
    add     x2, x1, #GQ_RESP
    str     x2, [x1, #VQ_DESC + 16]
    mov     w2, #512
    str     w2, [x1, #VQ_DESC + 24]
    mov     w2, #2                  // WRITE
    strh    w2, [x1, #VQ_DESC + 28]
    strh    wzr, [x1, #VQ_DESC + 30]
    // Offer descriptor 0, then notify queue 0.
    ldrh    w4, [x1, #VQ_USED + 2]  // used idx before
    adr     x5, gpu_state
    ldr     x6, [x5, #GS_AVAIL]
    and     x2, x6, #(QSZ - 1)
    add     x3, x1, #VQ_AVAIL + 4
    strh    wzr, [x3, x2, lsl #1]
    add     x6, x6, #1
    str     x6, [x5, #GS_AVAIL]
    dmb     sy
    strh    w6, [x1, #VQ_AVAIL + 2]
    dsb     sy
    ldr     x7, [x5, #GS_NOTIFY]
    strh    wzr, [x7]
    movz    x5, #1, lsl #32
1:  ldrh    w6, [x1, #VQ_USED + 2]
    cmp     w6, w4
    b.ne    2f
    subs    x5, x5, #1
    b.ne    1b
    mov     w0, #0
    b       gpu_error
2:  dmb     sy
    ldr     w0, [x1, #GQ_RESP]
    cmp     w0, w8
    b.ne    gpu_error
    ret
gpu_error:                          // w0 = the response type (0: no answer)
    mov     w24, w0
    adr     x0, msg_gpu_error
    bl      puts
    adr     x1, gq_area
    ldr     w0, [x1, #GQ_REQ]
    bl      put_hex16
    adr     x0, msg_space
    bl      puts
    mov     w0, w24
    bl      put_hex16
    b       reply_end

// TRANSFER_TO_HOST_2D then RESOURCE_FLUSH of the rectangle x0, x1 (x, y), x2, x3
// (width, height); flush_all: of the whole screen.
flush_all:
    mov     x0, #0
    mov     x1, #0
    mov     x2, #FB_W
    mov     x3, #FB_H
gpu_flush:
    stp     x29, x30, [sp, #-48]!
    stp     x0, x1, [sp, #16]
    stp     x2, x3, [sp, #32]
    mov     w0, #0x0105             // TRANSFER_TO_HOST_2D
    bl      gpu_hdr
    bl      gpu_rect
    ldp     x2, x3, [sp, #16]
    mov     x6, #FB_STRIDE
    mul     x6, x3, x6
    add     x6, x6, x2, lsl #2
    str     x6, [x1, #40]           // offset of the rectangle in the backing
    req_word 48, GPU_RES
    gpu_send 56
    mov     w0, #0x0104             // RESOURCE_FLUSH
    bl      gpu_hdr
    bl      gpu_rect
    req_word 40, GPU_RES
    gpu_send 48
    ldp     x29, x30, [sp], #48
    ret
// The caller's saved rectangle (gpu_flush's frame) into the request x1 at offset 24.
gpu_rect:
    ldp     x2, x3, [sp, #16]
    str     w2, [x1, #24]
    str     w3, [x1, #28]
    ldp     x2, x3, [sp, #32]
    str     w2, [x1, #32]
    str     w3, [x1, #36]
    ret

// Fills x3 whole rows of the framebuffer from row x1 with the colour w4, 4 pixels a
// store. Clobbers x3, x5, x7.
fill_rows:
    mov     x5, #FB_BASE
    mov     x7, #FB_STRIDE
    madd    x5, x1, x7, x5
    mul     x3, x3, x7              // bytes
    mov     w7, w4
    orr     x7, x7, x7, lsl #32
1:  cbz     x3, 2f
    stp     x7, x7, [x5], #16
    sub     x3, x3, #16
    b       1b
2:  ret

// The gfx pattern: pixel (x, y) in colour ((x >> 5) xor (y >> 4)) and 7.
draw_pattern:
    mov     x5, #FB_BASE
    adr     x9, palette
    mov     x1, #0                  // y
1:  mov     x0, #0                  // x >> 5
2:  lsr     x6, x1, #4
    eor     x6, x6, x0
    and     x6, x6, #7
    ldr     w7, [x9, x6, lsl #2]
    orr     x7, x7, x7, lsl #32
    mov     x8, #8                  // 32 pixels, 4 a store
3:  stp     x7, x7, [x5], #16
    subs    x8, x8, #1
    b.ne    3b
    add     x0, x0, #1
    cmp     x0, #FB_W / 32
    b.lo    2b
    add     x1, x1, #1
    cmp     x1, #FB_H
    b.lo    1b
    ret

// zero-terminated string at x0 -> UART (clobbers x0, w1, w2)
puts:
    ldrb    w1, [x0], #1
    cbz     w1, 3f
4:  ldr     w2, [x19, #UART_FR]
    tst     w2, #FR_TXFF
    b.ne    4b
    str     w1, [x19, #UART_DR]
    b       puts
3:  ret

park:
    wfe
    b       park

msg_banner:     .asciz "QEMUWEB-GUEST aarch64 v1\r\n"
msg_prompt:     .asciz "> "
msg_crlf:       .asciz "\r\n"
msg_unknown:    .asciz "ERR unknown command\r\n"
msg_bad_number: .asciz "ERR bad number\r\n"
msg_protected:  .asciz "ERR protected sector\r\n"
msg_no_disk:    .asciz "ERR no disk\r\n"
msg_disk_error: .asciz "ERR disk status "
msg_sector:     .asciz "SECTOR "
msg_crc:        .asciz " CRC32 "
msg_wrote:      .asciz "WROTE SECTOR "
msg_fill:       .asciz " FILL "
msg_info:       .asciz "DISK SECTORS "
word_echo:      .asciz "echo"
word_read:      .asciz "read"
word_write:     .asciz "write"
word_info:      .asciz "info"
word_gfx:       .asciz "gfx"
word_hline:     .asciz "hline"
word_redraw:    .asciz "redraw"
msg_gfx:        .asciz "GFX 640x480\r\n"
msg_hline:      .asciz "HLINE "
msg_redraw:     .asciz "REDRAW "
msg_scanout:    .asciz "GPU SCANOUT "
msg_by:         .asciz "x"
msg_space:      .asciz " "
msg_no_gpu:     .asciz "ERR no gpu\r\n"
msg_gpu_init:   .asciz "ERR gpu init\r\n"
msg_gpu_error:  .asciz "ERR gpu "
msg_not_gfx:    .asciz "ERR not in graphics mode\r\n"
    .balign 4
// colour i: R = bit 2, G = bit 1, B = bit 0 (0x00RRGGBB, B8G8R8X8 in memory)
palette:        .long 0x000000, 0x0000ff, 0x00ff00, 0x00ffff
                .long 0xff0000, 0xff00ff, 0xffff00, 0xffffff
    .balign 8
gpu_state:      .space 24
    .balign 16
line_buf:       .space LINE_MAX + 8
    .balign 16
stack:          .space 1024
stack_top:
    .balign 4096
vq_area:        .space 1024
gq_area:        .space 1024         // the virtio 1.0 rings need 16-byte alignment at most
    .balign 16
image_end:
