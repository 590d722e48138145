// QemuWeb aarch64 instruction test guest for QEMU's `virt` machine (GNU as syntax).
//
// An arm64 Linux "Image" (like aarch64-virt.s) for `-M virt -cpu cortex-a57 -kernel`,
// entered at EL1 with the MMU off. It maps the first GiB as device memory and RAM as
// normal memory (4 KiB pages for the first 2 MiB of RAM: one page unmapped, one
// read-only), turns the MMU on and runs instruction tests. Every test prints one line on
// the PL011 UART: a name and 64-bit hex values, results mixed into a hash
// (h = (h xor v) * 0x100000001b3), so that QEMU builds can be compared line by line.
// The last line is "ALL DONE".

    .equ UART,      0x09000000
    .equ GICD,      0x08000000
    .equ GICC,      0x08010000
    .equ RAM,       0x40000000
    .equ L1,        0x40100000
    .equ L2,        0x40101000
    .equ L3,        0x40102000
    .equ BUF,       0x40110000
    .equ XPAGE,     0x40111000
    .equ NOPAGE,    0x40120000
    .equ ROPAGE,    0x40121000
    .equ SMC,       0x40130000
    .equ STACK_TOP, 0x40180000
    .equ NVALS,     16

    .text
    .global _start
_start:
    b       entry
    .long   0
    .quad   0x80000                 // text_offset
    .quad   image_end - _start      // image_size
    .quad   0x2                     // flags: little-endian, 4K pages
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

entry:
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    cbnz    x0, park
    ldr     x0, =STACK_TOP
    mov     sp, x0
    ldr     x19, =UART
    str     wzr, [x19, #0x30]
    mov     w0, #0x60
    str     w0, [x19, #0x2c]
    mov     w0, #0x301
    str     w0, [x19, #0x30]
    adr     x0, vectors
    msr     vbar_el1, x0
    mov     x0, #(3 << 20)          // FP/SIMD at EL1 and EL0
    msr     cpacr_el1, x0
    isb
    bl      mmu_init
    ldr     x28, =0x100000001b3     // the hash multiplier
    adr     x0, msg_banner
    bl      puts

    bl      test_alu
    bl      test_mem
    bl      test_exclusive
    bl      test_exceptions
    bl      test_smc
    bl      test_irq
    bl      test_loop

    adr     x0, msg_done
    bl      puts
park:
    wfi
    b       park

// ---------------------------------------------------------------- MMU
mmu_init:
    ldr     x0, =L1                 // clear the three tables
    mov     x1, #(3 * 4096 / 8)
1:  str     xzr, [x0], #8
    subs    x1, x1, #1
    b.ne    1b
    ldr     x0, =L1
    mov     x1, #0x405              // block, AttrIndx 1 (device), AF
    str     x1, [x0]                // 0 - 1 GiB
    ldr     x1, =(L2 | 3)
    str     x1, [x0, #8]            // 1 - 2 GiB: RAM
    ldr     x0, =L2
    ldr     x1, =(L3 | 3)
    str     x1, [x0]
    ldr     x1, =(RAM + 0x200000 + 0x701)   // 2 MiB blocks, normal, inner shareable, AF
    mov     x2, #1
2:  str     x1, [x0, x2, lsl #3]
    add     x1, x1, #0x200000
    add     x2, x2, #1
    cmp     x2, #512
    b.lo    2b
    ldr     x0, =L3
    ldr     x1, =(RAM + 0x703)      // pages, normal, inner shareable, AF
    mov     x2, #0
3:  str     x1, [x0, x2, lsl #3]
    add     x1, x1, #0x1000
    add     x2, x2, #1
    cmp     x2, #512
    b.lo    3b
    str     xzr, [x0, #(((NOPAGE - RAM) >> 12) * 8)]
    ldr     x1, =(ROPAGE + 0x783)   // AP[2:1] = 10: read-only at EL1
    str     x1, [x0, #(((ROPAGE - RAM) >> 12) * 8)]
    dsb     sy
    ldr     x0, =0x00ff             // Attr0 normal write-back, Attr1 device nGnRnE
    msr     mair_el1, x0
    ldr     x0, =((25) | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32))
    msr     tcr_el1, x0             // T0SZ 25, WB, inner shareable, 4K, EPD1, 40-bit PA
    ldr     x0, =L1
    msr     ttbr0_el1, x0
    isb
    tlbi    vmalle1
    dsb     sy
    isb
    mrs     x0, sctlr_el1
    orr     x0, x0, #1              // M
    orr     x0, x0, #(1 << 2)       // C
    orr     x0, x0, #(1 << 12)      // I
    bic     x0, x0, #(1 << 1)       // no alignment checks
    bic     x0, x0, #(1 << 3)       // no SP alignment checks
    bic     x0, x0, #(1 << 19)      // no WXN
    msr     sctlr_el1, x0
    isb
    ret

// ---------------------------------------------------------------- output
// w0 -> UART (clobbers w9)
putc:
1:  ldr     w9, [x19, #0x18]
    tst     w9, #0x20
    b.ne    1b
    str     w0, [x19]
    ret

// zero-terminated string at x0 (clobbers x0, x9, x10)
puts:
    mov     x10, x30
    mov     x11, x0
1:  ldrb    w0, [x11], #1
    cbz     w0, 2f
    bl      putc
    b       1b
2:  ret     x10

// " " and x0 as 16 hex digits (clobbers x0, x9-x13)
put_hex:
    mov     x10, x30
    mov     x12, x0
    mov     w0, #' '
    bl      putc
    mov     x13, #16
1:  ror     x12, x12, #60
    and     x0, x12, #15
    cmp     x0, #10
    b.lo    2f
    add     x0, x0, #('a' - '0' - 10)
2:  add     x0, x0, #'0'
    bl      putc
    subs    x13, x13, #1
    b.ne    1b
    ret     x10

put_crlf:
    mov     x10, x30
    mov     w0, #13
    bl      putc
    mov     w0, #10
    bl      putc
    ret     x10

// name at x0, then the hash x27, CR LF (clobbers x0, x9-x14)
put_result:
    mov     x14, x30
    bl      puts
    mov     x0, x27
    bl      put_hex
    bl      put_crlf
    ret     x14

    .macro MIX reg
    eor     x27, x27, \reg
    mul     x27, x27, x28
    .endm

    .balign 8
vals:
    .quad 0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0x8000
    .quad 0xffff, 0x7fffffff, 0x80000000, 0xffffffff
    .quad 0x7fffffffffffffff, 0x8000000000000000, 0xffffffffffffffff
    .quad 0x123456789abcdef0

// ---------------------------------------------------------------- kernel driver
// A kernel gets x0, x1 (operands), x2 (a third value) and NZCV; it returns x0, x2 and
// the flags in x9. run_table: x20 = table of { kernel, carry mode, name } entries,
// 0-ended; each kernel runs over every pair of vals, with NZCV = 0, and with C set
// too when the mode is 2.
run_table:
    mov     x26, x30
1:  ldr     x21, [x20]
    cbz     x21, 9f
    ldr     x22, [x20, #8]
    mov     x27, #0
    mov     x23, #0                 // i
2:  mov     x24, #0                 // j
3:  adr     x25, vals
    ldr     x0, [x25, x23, lsl #3]
    ldr     x1, [x25, x24, lsl #3]
    add     x2, x23, x24
    and     x2, x2, #(NVALS - 1)
    ldr     x2, [x25, x2, lsl #3]
    msr     nzcv, xzr
    stp     x0, x1, [sp, #-32]!
    str     x2, [sp, #16]
    blr     x21
    MIX     x0
    MIX     x2
    MIX     x9
    ldp     x0, x1, [sp]
    ldr     x2, [sp, #16]
    add     sp, sp, #32
    cmp     x22, #2
    b.ne    4f
    mov     x9, #(1 << 29)
    msr     nzcv, x9
    blr     x21
    MIX     x0
    MIX     x2
    MIX     x9
4:  add     x24, x24, #1
    cmp     x24, #NVALS
    b.lo    3b
    add     x23, x23, #1
    cmp     x23, #NVALS
    b.lo    2b
    ldr     x0, [x20, #16]
    bl      put_result
    add     x20, x20, #24
    b       1b
9:  ret     x26

    .macro K name, i1, i2="", i3=""
\name:
    \i1
    \i2
    \i3
    mrs     x9, nzcv
    ret
    .endm

    .macro T kernel, mode, name
    .quad   \kernel, \mode, 1f
    .pushsection .text, 1
1:  .asciz  "\name"
    .popsection
    .endm

K k_adds, "adds x0, x0, x1"
K k_adds32, "adds w0, w0, w1"
K k_subs, "subs x0, x0, x1"
K k_subs32, "subs w0, w0, w1"
K k_adcs, "adcs x0, x0, x1"
K k_adcs32, "adcs w0, w0, w1"
K k_sbcs, "sbcs x0, x0, x1"
K k_sbcs32, "sbcs w0, w0, w1"
K k_add_ext, "add x0, x0, w1, sxtb #2"
K k_sub_ext, "sub w0, w0, w1, uxth #1"
K k_ands, "ands x0, x0, x1"
K k_bics32, "bics w0, w0, w1"
K k_orr_sh, "orr x0, x0, x1, lsl #7"
K k_eor_sh, "eor w0, w0, w1, asr #3"
K k_orn, "orn x0, x0, x1, ror #13"
K k_eon, "eon x0, x0, x1"
K k_mul, "mul x0, x0, x1"
K k_madd32, "madd w0, w0, w1, w2"
K k_msub, "msub x0, x0, x1, x2"
K k_smulh, "smulh x0, x0, x1"
K k_umulh, "umulh x0, x0, x1"
K k_smull, "smull x0, w0, w1"
K k_umaddl, "umaddl x0, w0, w1, x2"
K k_udiv, "udiv x0, x0, x1"
K k_sdiv, "sdiv x0, x0, x1"
K k_udiv32, "udiv w0, w0, w1"
K k_sdiv32, "sdiv w0, w0, w1"
K k_lslv, "lsl x0, x0, x1"
K k_lsrv32, "lsr w0, w0, w1"
K k_asrv, "asr x0, x0, x1"
K k_rorv32, "ror w0, w0, w1"
K k_clz, "clz x0, x1"
K k_cls32, "cls w0, w1"
K k_rbit, "rbit x0, x1"
K k_rev, "rev x0, x1"
K k_rev16, "rev16 w0, w1"
K k_rev32, "rev32 x0, x1"
K k_extr, "extr x0, x0, x1, #19"
K k_ubfx, "ubfx x0, x1, #7, #13"
K k_sbfx32, "sbfx w0, w1, #3, #17"
K k_bfi, "bfi x0, x1, #11, #29"
K k_bfxil32, "bfxil w0, w1, #5, #9"
K k_sxtw, "sxtw x0, w1"
K k_uxth, "uxth w0, w1"
K k_csel, "cmp x0, x1", "csel x0, x0, x2, lt"
K k_csinc, "cmp w0, w1", "csinc w0, w2, w1, hi"
K k_csinv, "cmp x0, x1", "csinv x0, x1, x2, ge"
K k_csneg, "cmp x0, x1", "csneg x0, x2, x0, ls"
K k_cset, "cmp x0, x1", "cset x0, vs", "csetm x2, mi"
K k_ccmp, "cmp x0, x1", "ccmp x2, x0, #5, ne"
K k_ccmn32, "cmp w0, w1", "ccmn w2, #7, #10, ge"
K k_tst, "tst x0, x1"
K k_addsi, "adds x0, x0, #0xfff"
K k_subsi32, "subs w0, w0, #0x123, lsl #12"
K k_andi, "ands x0, x0, #0xff00ff00ff00ff00"
K k_movk, "movk x0, #0xbeef, lsl #16", "movn x2, #0x1234, lsl #32"

alu_table:
    T k_adds, 2, "adds"
    T k_adds32, 2, "adds32"
    T k_subs, 2, "subs"
    T k_subs32, 2, "subs32"
    T k_adcs, 2, "adcs"
    T k_adcs32, 2, "adcs32"
    T k_sbcs, 2, "sbcs"
    T k_sbcs32, 2, "sbcs32"
    T k_add_ext, 0, "add_ext"
    T k_sub_ext, 0, "sub_ext"
    T k_ands, 0, "ands"
    T k_bics32, 0, "bics32"
    T k_orr_sh, 0, "orr_sh"
    T k_eor_sh, 0, "eor_sh"
    T k_orn, 0, "orn"
    T k_eon, 0, "eon"
    T k_mul, 0, "mul"
    T k_madd32, 0, "madd32"
    T k_msub, 0, "msub"
    T k_smulh, 0, "smulh"
    T k_umulh, 0, "umulh"
    T k_smull, 0, "smull"
    T k_umaddl, 0, "umaddl"
    T k_udiv, 0, "udiv"
    T k_sdiv, 0, "sdiv"
    T k_udiv32, 0, "udiv32"
    T k_sdiv32, 0, "sdiv32"
    T k_lslv, 0, "lslv"
    T k_lsrv32, 0, "lsrv32"
    T k_asrv, 0, "asrv"
    T k_rorv32, 0, "rorv32"
    T k_clz, 0, "clz"
    T k_cls32, 0, "cls32"
    T k_rbit, 0, "rbit"
    T k_rev, 0, "rev"
    T k_rev16, 0, "rev16"
    T k_rev32, 0, "rev32"
    T k_extr, 0, "extr"
    T k_ubfx, 0, "ubfx"
    T k_sbfx32, 0, "sbfx32"
    T k_bfi, 0, "bfi"
    T k_bfxil32, 0, "bfxil32"
    T k_sxtw, 0, "sxtw"
    T k_uxth, 0, "uxth"
    T k_csel, 0, "csel"
    T k_csinc, 0, "csinc"
    T k_csinv, 0, "csinv"
    T k_csneg, 0, "csneg"
    T k_cset, 0, "cset"
    T k_ccmp, 0, "ccmp"
    T k_ccmn32, 0, "ccmn32"
    T k_tst, 0, "tst"
    T k_addsi, 0, "addsi"
    T k_subsi32, 0, "subsi32"
    T k_andi, 0, "andsi"
    T k_movk, 0, "movk"
    .quad   0

test_alu:
    mov     x15, x30
    adr     x20, alu_table
    bl      run_table
    ret     x15

// ---------------------------------------------------------------- loads and stores
// For each width (1, 2, 4, 8, 16 with stp) and offset 0-15: a pattern in 48 bytes, a
// store at the spot, then the 48 bytes and loads of every width at that offset are
// mixed; once inside a page and once across the page boundary at XPAGE.
mem_round:                          // x20 = base
    mov     x26, x30
    mov     x21, #0                 // offset
1:  mov     x22, #0                 // width index
2:  ldr     x0, =0x0706050403020100
    ldr     x1, =0x0808080808080808
    mov     x2, x20
    mov     x3, #6
3:  str     x0, [x2], #8
    add     x0, x0, x1
    subs    x3, x3, #1
    b.ne    3b
    add     x23, x20, #16
    add     x23, x23, x21
    ldr     x0, =0xf1e2d3c4b5a69788
    eor     x0, x0, x21
    cmp     x22, #0
    b.ne    4f
    strb    w0, [x23]
    b       8f
4:  cmp     x22, #1
    b.ne    5f
    strh    w0, [x23]
    b       8f
5:  cmp     x22, #2
    b.ne    6f
    str     w0, [x23]
    b       8f
6:  cmp     x22, #3
    b.ne    7f
    str     x0, [x23]
    b       8f
7:  ror     x1, x0, #32
    stp     x0, x1, [x23]
8:  mov     x2, x20
    mov     x3, #6
9:  ldr     x0, [x2], #8
    MIX     x0
    subs    x3, x3, #1
    b.ne    9b
    ldrb    w0, [x23]
    MIX     x0
    ldrsb   x0, [x23, #1]
    MIX     x0
    ldrh    w0, [x23]
    MIX     x0
    ldursh  w0, [x23, #1]
    MIX     x0
    ldr     w0, [x23]
    MIX     x0
    ldursw  x0, [x23, #3]
    MIX     x0
    ldr     x0, [x23]
    MIX     x0
    ldur    x0, [x23, #-5]
    MIX     x0
    sub     x2, x23, #3
    ldp     x0, x1, [x2]
    MIX     x0
    MIX     x1
    ldur    q0, [x23, #-7]
    fmov    x0, d0
    MIX     x0
    mov     x0, v0.d[1]
    MIX     x0
    add     x22, x22, #1
    cmp     x22, #5
    b.lo    2b
    add     x21, x21, #1
    cmp     x21, #16
    b.lo    1b
    ret     x26

test_mem:
    mov     x15, x30
    mov     x27, #0
    ldr     x20, =(BUF + 0x100)
    bl      mem_round
    adr     x0, name_mem
    bl      put_result
    mov     x27, #0
    ldr     x20, =(XPAGE - 24)
    bl      mem_round
    adr     x0, name_mem_xpage
    bl      put_result
    // writeback addressing modes
    mov     x27, #0
    ldr     x20, =(XPAGE - 40)
    adr     x21, vals
    mov     x3, #NVALS
1:  ldr     x0, [x21], #8           // post-index
    str     x0, [x20, #5]!          // pre-index, unaligned
    sturh   w0, [x20, #3]
    ldur    w1, [x20, #-2]
    MIX     x1
    MIX     x20
    subs    x3, x3, #1
    b.ne    1b
    ldr     x20, =(XPAGE - 40)
    mov     x3, #14
2:  ldr     x0, [x20], #7
    MIX     x0
    subs    x3, x3, #1
    b.ne    2b
    adr     x0, name_mem_wb
    bl      put_result
    ret     x15

name_mem:       .asciz "mem"
name_mem_xpage: .asciz "mem_xpage"
name_mem_wb:    .asciz "mem_wb"
    .balign 4

// ---------------------------------------------------------------- exclusives
test_exclusive:
    mov     x15, x30
    mov     x27, #0
    ldr     x20, =(BUF + 0x800)
    str     xzr, [x20]
    mov     x3, #200
1:  ldxr    x0, [x20]
    add     x0, x0, x3
    stxr    w1, x0, [x20]
    cbnz    w1, 1b
    ldaxr   w0, [x20]
    eor     w0, w0, w3, lsl #3
    stlxr   w1, w0, [x20]
    cbnz    w1, 1b
    ldr     x0, [x20]
    MIX     x0
    subs    x3, x3, #1
    b.ne    1b
    adr     x0, name_excl
    bl      put_result
    ret     x15
name_excl: .asciz "exclusive"
    .balign 4

// ---------------------------------------------------------------- exceptions
// The handler records ESR_EL1 and FAR_EL1 (for aborts) and continues at `recover`.
    .balign 2048
vectors:
    .balign 0x80
    b       unexpected              // current EL with SP0
    .balign 0x80
    b       unexpected
    .balign 0x80
    b       unexpected
    .balign 0x80
    b       unexpected
    .balign 0x80
    b       sync_handler            // current EL with SPx: synchronous
    .balign 0x80
    b       irq_handler             // IRQ
    .balign 0x80
    b       unexpected
    .balign 0x80
    b       unexpected
    .balign 0x80
    b       unexpected              // lower EL
    .balign 0x800

sync_handler:
    stp     x0, x1, [sp, #-16]!
    mrs     x0, esr_el1
    adr     x1, exc_esr
    str     x0, [x1]
    lsr     x0, x0, #26
    cmp     x0, #0x20               // instruction or data abort: FAR is valid
    b.lo    1f
    cmp     x0, #0x25
    b.hi    1f
    mrs     x0, far_el1
    b       2f
1:  mov     x0, #0
2:  adr     x1, exc_far
    str     x0, [x1]
    adr     x1, exc_count
    ldr     x0, [x1]
    add     x0, x0, #1
    str     x0, [x1]
    adr     x1, recover
    ldr     x0, [x1]
    cbz     x0, unexpected
    str     xzr, [x1]
    msr     elr_el1, x0
    ldp     x0, x1, [sp], #16
    eret

unexpected:
    adr     x0, msg_unexpected
    bl      puts
    mrs     x0, esr_el1
    bl      put_hex
    mrs     x0, elr_el1
    bl      put_hex
    bl      put_crlf
1:  wfi
    b       1b

    .balign 8
exc_esr:    .quad 0
exc_far:    .quad 0
exc_count:  .quad 0
recover:    .quad 0
irq_count:  .quad 0

// name at x0, then ESR and FAR
put_exc:
    mov     x14, x30
    bl      puts
    ldr     x0, exc_esr
    bl      put_hex
    ldr     x0, exc_far
    bl      put_hex
    bl      put_crlf
    ret     x14

    .macro EXC name, i1, i2=""
    adr     x0, 1f
    adr     x1, recover
    str     x0, [x1]
    \i1
    \i2
1:  adr     x0, 2f
    bl      put_exc
    .pushsection .text, 1
2:  .asciz  "\name"
    .popsection
    .endm

test_exceptions:
    mov     x15, x30
    EXC     "svc", "svc #0x42"
    EXC     "brk", "brk #7"
    EXC     "udf", "udf #0x1234"
    EXC     "dabort_read", "ldr x2, =(NOPAGE + 0x123)", "ldr x3, [x2]"
    EXC     "dabort_write", "ldr x2, =(NOPAGE + 0xff8)", "str x3, [x2]"
    EXC     "perm_write", "ldr x2, =(ROPAGE + 0x10)", "strb w3, [x2]"
    EXC     "dabort_xpage", "ldr x2, =(NOPAGE - 4)", "ldr x3, [x2]"
    EXC     "align_excl", "ldr x2, =(BUF + 0x803)", "ldxr x3, [x2]"
    EXC     "iabort", "ldr x2, =(NOPAGE + 0x40)", "blr x2"
    EXC     "sysreg_el2", "mrs x2, hcr_el2"
    ldr     x0, exc_count
    mov     x27, x0
    adr     x0, name_exc_count
    bl      put_result
    ret     x15
name_exc_count: .asciz "exc_count"
    .balign 4

// ---------------------------------------------------------------- self-modifying code
// "movz w0, #imm; ret" is rewritten and called again and again.
test_smc:
    mov     x15, x30
    mov     x27, #0
    ldr     x20, =SMC
    mov     x21, #300
    ldr     w22, =0x52800000        // movz w0, #0
    ldr     w23, =0xd65f03c0        // ret
1:  orr     w0, w22, w21, lsl #5
    str     w0, [x20]
    str     w23, [x20, #4]
    dc      cvau, x20
    dsb     ish
    ic      ivau, x20
    dsb     ish
    isb
    blr     x20
    MIX     x0
    blr     x20
    MIX     x0
    subs    x21, x21, #1
    b.ne    1b
    adr     x0, name_smc
    bl      put_result
    ret     x15
name_smc: .asciz "smc"
    .balign 4

// ---------------------------------------------------------------- the timer interrupt
// The EL1 physical timer (PPI 30) through the GICv2, 1 ms period; wait for 3 of them.
irq_handler:
    stp     x0, x1, [sp, #-16]!
    ldr     x1, =GICC
    ldr     w0, [x1, #0x0c]         // IAR
    and     w0, w0, #0x3ff
    cmp     w0, #30
    b.ne    1f
    mrs     x0, cntfrq_el0
    lsr     x0, x0, #10
    msr     cntp_tval_el0, x0
    adr     x0, irq_count
    ldr     x1, [x0]
    add     x1, x1, #1
    str     x1, [x0]
    mov     w0, #30
    ldr     x1, =GICC
1:  str     w0, [x1, #0x10]         // EOIR
    ldp     x0, x1, [sp], #16
    eret

test_irq:
    mov     x15, x30
    ldr     x1, =GICD
    mov     w0, #1
    str     w0, [x1]                // GICD_CTLR: enable
    mov     w0, #(1 << 30)
    str     w0, [x1, #0x100]        // ISENABLER0: PPI 30
    ldr     x1, =GICC
    mov     w0, #0xff
    str     w0, [x1, #0x04]         // PMR
    mov     w0, #1
    str     w0, [x1]                // GICC_CTLR: enable
    mrs     x0, cntfrq_el0
    lsr     x0, x0, #10
    msr     cntp_tval_el0, x0
    mov     x0, #1
    msr     cntp_ctl_el0, x0
    msr     daifclr, #2
1:  wfi
    ldr     x0, irq_count
    cmp     x0, #3
    b.lo    1b
    msr     daifset, #2
    msr     cntp_ctl_el0, xzr
    mov     x27, #3
    adr     x0, name_irq
    bl      put_result
    ret     x15
name_irq: .asciz "irq_timer"
    .balign 4

// ---------------------------------------------------------------- a long hot loop
test_loop:
    mov     x15, x30
    ldr     x20, =BUF
    mov     x3, #(0x4000 / 8)
    ldr     x0, =0x0123456789abcdef
1:  str     x0, [x20], #8
    ror     x0, x0, #7
    mul     x0, x0, x28
    subs    x3, x3, #1
    b.ne    1b
    mov     x4, #4
    mov     w5, #0xffffffff
    ldr     w6, =0xedb88320
2:  ldr     x20, =BUF
    mov     x3, #0x4000
3:  ldrb    w0, [x20], #1
    eor     w5, w5, w0
    mov     w7, #8
4:  and     w8, w5, #1
    lsr     w5, w5, #1
    cbz     w8, 5f
    eor     w5, w5, w6
5:  subs    w7, w7, #1
    b.ne    4b
    subs    x3, x3, #1
    b.ne    3b
    subs    x4, x4, #1
    b.ne    2b
    mvn     w27, w5
    adr     x0, name_crc
    bl      put_result
    ret     x15
name_crc: .asciz "crc32"

msg_banner:     .asciz "aarch64-insn v1\r\n"
msg_done:       .asciz "ALL DONE\r\n"
msg_unexpected: .asciz "UNEXPECTED EXCEPTION"
    .balign 16
    .ltorg
    .text 1
    .balign 16
image_end:
