// QemuWeb aarch64 test guest for QEMU's `virt` machine (GNU as syntax).
//
// Built as a raw arm64 Linux "Image": the 64-byte header below carries the magic
// "ARM\x64" and text_offset 0x80000, so `-kernel` loads it at RAM base + 0x80000
// (0x40080000 on `virt`), enters it at offset 0 on the boot CPU with the MMU off and
// keeps any secondary CPUs parked in PSCI. The code is position-independent anyway.
//
// It programs the PL011 UART at 0x09000000 (polled, no interrupts), prints the banner
// "QEMUWEB-GUEST aarch64 v1", then loops: prompt "> ", read a line (CR or LF ends it,
// typed characters are not echoed), reply with one line:
//   echo TEXT  -> TEXT
//   anything else (not empty) -> ERR unknown command
// Every reply ends with CR LF.

    .equ UART_BASE, 0x09000000
    .equ UART_DR,   0x00
    .equ UART_FR,   0x18
    .equ UART_LCRH, 0x2c
    .equ UART_CR,   0x30
    .equ FR_RXFE,   0x10
    .equ FR_TXFF,   0x20
    .equ LINE_MAX,  120

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
    mov     x19, #UART_BASE
    str     wzr, [x19, #UART_CR]    // disable while configuring
    mov     w0, #0x60               // 8 bits, FIFOs off
    str     w0, [x19, #UART_LCRH]
    mov     w0, #0x301              // UARTEN | TXE | RXE
    str     w0, [x19, #UART_CR]
    adr     x0, msg_banner
    bl      puts

main_loop:
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
    // "echo" followed by the end of the line or a space?
    adr     x0, word_echo
    mov     x2, x20
1:  ldrb    w3, [x0], #1
    cbz     w3, 2f
    ldrb    w4, [x2], #1
    cmp     w3, w4
    b.ne    unknown
    b       1b
2:  ldrb    w4, [x2]
    cbz     w4, echo_out
    cmp     w4, #0x20
    b.ne    unknown
    add     x2, x2, #1
echo_out:
    mov     x0, x2
    bl      puts
    adr     x0, msg_crlf
    bl      puts
    b       main_loop
unknown:
    adr     x0, msg_unknown
    bl      puts
    b       main_loop

// zero-terminated string at x0 -> UART (clobbers x0, w1)
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

msg_banner:  .asciz "QEMUWEB-GUEST aarch64 v1\r\n"
msg_prompt:  .asciz "> "
msg_crlf:    .asciz "\r\n"
msg_unknown: .asciz "ERR unknown command\r\n"
word_echo:   .asciz "echo"
    .balign 16
line_buf:    .space LINE_MAX + 8
    .balign 16
image_end:
