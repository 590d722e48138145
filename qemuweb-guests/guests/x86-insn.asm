; QemuWeb x86_64 instruction test guest (NASM syntax, flat binary disk image).
;
; Boots from a BIOS disk (-M pc, the image as an IDE disk), enters 64-bit long mode with
; 4 KiB pages identity-mapping the first 2 MiB, and runs instruction tests. Every test
; prints one line on COM1 (polled 16550 at 0x3F8): a name, then 64-bit hex values. The
; lines are compared between QEMU builds (the WebAssembly JIT against native TCG), so
; each test must be deterministic: results and only the flags the architecture defines
; are mixed into a 64-bit hash (h = (h xor v) * 0x100000001b3).
;
; The last line is "ALL DONE", then the CPU halts.
;
; Memory: code at 0x7C00 (boot sector) and 0x7E00 (the rest), page tables 0x20000-0x23FFF,
; IDT 0x24000, data buffers 0x30000-0x33FFF, an unmapped page at 0x40000, a read-only page
; at 0x41000, a code buffer for self-modifying code at 0x50000, stack below 0x90000.

bits 16
org 0x7c00

COM1            equ 0x3f8
PML4            equ 0x20000
PDPT            equ 0x21000
PDIR            equ 0x22000
PTAB            equ 0x23000
IDT             equ 0x24000
BUF             equ 0x30000
XPAGE           equ 0x31000         ; the page boundary inside BUF
NOPAGE          equ 0x40000
ROPAGE          equ 0x41000
SMC             equ 0x50000
STACK_TOP       equ 0x90000
K_FNV           equ 0x100000001b3
LOAD_SECTORS    equ 48              ; the image after the boot sector must fit

; ---------------------------------------------------------------- boot sector
start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    cld
    mov si, dap
    mov ah, 0x42
    int 0x13
    jc .fail
    jmp stage2
.fail:
    mov si, msg_fail
.next:
    lodsb
    test al, al
    jz .halt
    mov dx, COM1
    out dx, al
    jmp .next
.halt:
    hlt
    jmp .halt

align 4
dap:
    db 16, 0
    dw LOAD_SECTORS
    dw 0x7e00, 0
    dq 1
msg_fail:
    db "x86-insn: load failed", 13, 10, 0

gdt:
    dq 0
    dq 0x00209a0000000000           ; 0x08: 64-bit code
    dq 0x00cf92000000ffff           ; 0x10: data
    dq 0x00cf9a000000ffff           ; 0x18: 32-bit code
gdt_desc:
    dw gdt_desc - gdt - 1
    dd gdt

    times 510 - ($ - $$) db 0
    dw 0xaa55

; ---------------------------------------------------------------- to long mode
stage2:
    in al, 0x92                     ; fast A20
    or al, 2
    and al, 0xfe
    out 0x92, al
    lgdt [gdt_desc]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    jmp 0x18:pm32

bits 32
pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, STACK_TOP
    mov edi, PML4                   ; clear the page tables
    mov ecx, 0x4000 / 4
    xor eax, eax
    rep stosd
    mov dword [PML4], PDPT | 3
    mov dword [PDPT], PDIR | 3
    mov dword [PDIR], PTAB | 3
    mov edi, PTAB
    mov eax, 3
    mov ecx, 512
.pt:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    loop .pt
    mov dword [PTAB + (NOPAGE >> 12) * 8], 0
    mov dword [PTAB + (ROPAGE >> 12) * 8], ROPAGE | 1
    mov eax, PML4
    mov cr3, eax
    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)     ; PAE, OSFXSR, OSXMMEXCPT
    mov cr4, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 1 << 8                  ; LME
    wrmsr
    mov eax, cr0
    and eax, ~(1 << 2)              ; no EM
    or eax, 0x80010002              ; PG, WP, MP
    mov cr0, eax
    jmp 0x08:lm64

; ---------------------------------------------------------------- 64-bit
bits 64
lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, STACK_TOP
    call serial_init
    call idt_init
    mov r14, K_FNV
    lea rsi, [rel msg_banner]
    call puts

    call test_alu
    call test_muldiv
    call test_shifts
    call test_bits
    call test_moves
    call test_mem
    call test_string
    call test_sse
    call test_exceptions
    call test_smc
    call test_irq
    call test_loop

    lea rsi, [rel msg_done]
    call puts
.halt:
    cli
    hlt
    jmp .halt

; ---------------------------------------------------------------- output
serial_init:
    mov dx, COM1 + 1
    xor al, al
    out dx, al                      ; no interrupts
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al                      ; DLAB
    mov dx, COM1
    mov al, 1
    out dx, al                      ; 115200
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 3
    out dx, al                      ; 8N1
    ret

; al -> COM1 (clobbers dx)
putc:
    push rax
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop rax
    mov dx, COM1
    out dx, al
    ret

; zero-terminated string at rsi
puts:
    push rax
    push rdx
    push rsi
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop rsi
    pop rdx
    pop rax
    ret

; " " and rax as 16 hex digits
put_hex:
    push rax
    push rcx
    push rdx
    push rbx
    mov rbx, rax
    mov al, ' '
    call putc
    mov ecx, 16
.digit:
    rol rbx, 4
    mov eax, ebx
    and eax, 15
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    call putc
    loop .digit
    pop rbx
    pop rdx
    pop rcx
    pop rax
    ret

put_crlf:
    push rax
    push rdx
    mov al, 13
    call putc
    mov al, 10
    call putc
    pop rdx
    pop rax
    ret

; name at rsi, then r15 (the hash) and CR LF
put_result:
    call puts
    mov rax, r15
    call put_hex
    jmp put_crlf

%macro MIX 1
    xor r15, %1
    imul r15, r14
%endmacro

; ---------------------------------------------------------------- operand tables
align 8
vals:
    dq 0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0x8000
    dq 0xffff, 0x7fffffff, 0x80000000, 0xffffffff
    dq 0x7fffffffffffffff, 0x8000000000000000, 0xffffffffffffffff
    dq 0x123456789abcdef0
NVALS equ 16

; ---------------------------------------------------------------- kernel driver
; A kernel gets rax, rbx (operands), rcx (= rbx, the count for shifts), rdx (a third
; value) and CF (carry-in); it returns rax, rdx and the flags in r9.
; run_table: rsi = table of { kernel, flags mask, carry-in mode, name } entries, 0-ended.
; Each kernel runs over every pair of vals; carry-in mode 0: CF=0, 1: CF=1, 2: both.
run_table:
    push rsi
.entry:
    mov rbp, [rsi]
    test rbp, rbp
    jz .end
    mov r12, [rsi + 8]              ; flags mask
    mov r13, [rsi + 16]             ; carry-in mode
    xor r15, r15
    xor r10, r10                    ; i
.i:
    xor r11, r11                    ; j
.j:
    lea rdi, [rel vals]
    mov rax, [rdi + r10 * 8]
    mov rbx, [rdi + r11 * 8]
    lea r8, [r10 + r11]
    and r8, NVALS - 1
    mov rdx, [rdi + r8 * 8]
    mov rcx, rbx
    cmp r13, 1
    je .cf1
    clc
    push rax
    push rbx
    push rcx
    push rdx
    call rbp
    and r9, r12
    MIX rax
    MIX rdx
    MIX r9
    pop rdx
    pop rcx
    pop rbx
    pop rax
    cmp r13, 2
    jne .next
.cf1:
    stc
    call rbp
    and r9, r12
    MIX rax
    MIX rdx
    MIX r9
.next:
    inc r11
    cmp r11, NVALS
    jb .j
    inc r10
    cmp r10, NVALS
    jb .i
    push rsi
    mov rsi, [rsi + 24]
    call put_result
    pop rsi
    add rsi, 32
    jmp .entry
.end:
    pop rsi
    ret

%macro K 2-*
%1:
%rep %0 - 1
%rotate 1
    %1
%endrep
    pushfq
    pop r9
    ret
%endmacro

%macro T 4                          ; kernel, flags mask, carry-in, name
    dq %1, %2, %3, %%name
    [section .names]
%%name: db %4, 0
    __?SECT?__
%endmacro

section .names progbits follows=.text align=1
section .text

FL_ALL  equ 0x8d5
FL_LOG  equ 0x8c5
FL_SZP  equ 0x0c4

; ---------------------------------------------------------------- ALU
K k_add8, {add al, bl}
K k_add16, {add ax, bx}
K k_add32, {add eax, ebx}
K k_add64, {add rax, rbx}
K k_adc8, {adc al, bl}
K k_adc16, {adc ax, bx}
K k_adc32, {adc eax, ebx}
K k_adc64, {adc rax, rbx}
K k_sub8, {sub al, bl}
K k_sub16, {sub ax, bx}
K k_sub32, {sub eax, ebx}
K k_sub64, {sub rax, rbx}
K k_sbb8, {sbb al, bl}
K k_sbb16, {sbb ax, bx}
K k_sbb32, {sbb eax, ebx}
K k_sbb64, {sbb rax, rbx}
K k_cmp8, {cmp al, bl}
K k_cmp32, {cmp eax, ebx}
K k_cmp64, {cmp rax, rbx}
K k_and8, {and al, bl}
K k_and32, {and eax, ebx}
K k_and64, {and rax, rbx}
K k_or16, {or ax, bx}
K k_or64, {or rax, rbx}
K k_xor32, {xor eax, ebx}
K k_xor64, {xor rax, rbx}
K k_test64, {test rax, rbx}
K k_neg8, {neg al}
K k_neg64, {neg rax}
K k_not32, {not eax}
K k_inc8, {inc al}
K k_inc64, {inc rax}
K k_dec16, {dec ax}
K k_dec32, {dec eax}
K k_addi64, {add rax, -0x1234567}
K k_subi32, {sub eax, 0x7ffffff0}
K k_andi16, {and ax, 0x0ff0}
K k_lea, {lea rax, [rax + rbx * 4 + 0x12345]}
K k_lea32, {lea eax, [rax + rbx * 8 - 3]}

alu_table:
    T k_add8, FL_ALL, 0, "add8"
    T k_add16, FL_ALL, 0, "add16"
    T k_add32, FL_ALL, 0, "add32"
    T k_add64, FL_ALL, 0, "add64"
    T k_adc8, FL_ALL, 2, "adc8"
    T k_adc16, FL_ALL, 2, "adc16"
    T k_adc32, FL_ALL, 2, "adc32"
    T k_adc64, FL_ALL, 2, "adc64"
    T k_sub8, FL_ALL, 0, "sub8"
    T k_sub16, FL_ALL, 0, "sub16"
    T k_sub32, FL_ALL, 0, "sub32"
    T k_sub64, FL_ALL, 0, "sub64"
    T k_sbb8, FL_ALL, 2, "sbb8"
    T k_sbb16, FL_ALL, 2, "sbb16"
    T k_sbb32, FL_ALL, 2, "sbb32"
    T k_sbb64, FL_ALL, 2, "sbb64"
    T k_cmp8, FL_ALL, 0, "cmp8"
    T k_cmp32, FL_ALL, 0, "cmp32"
    T k_cmp64, FL_ALL, 0, "cmp64"
    T k_and8, FL_LOG, 0, "and8"
    T k_and32, FL_LOG, 0, "and32"
    T k_and64, FL_LOG, 0, "and64"
    T k_or16, FL_LOG, 0, "or16"
    T k_or64, FL_LOG, 0, "or64"
    T k_xor32, FL_LOG, 0, "xor32"
    T k_xor64, FL_LOG, 0, "xor64"
    T k_test64, FL_LOG, 0, "test64"
    T k_neg8, FL_ALL, 0, "neg8"
    T k_neg64, FL_ALL, 0, "neg64"
    T k_not32, FL_ALL, 0, "not32"
    T k_inc8, FL_ALL, 2, "inc8"
    T k_inc64, FL_ALL, 2, "inc64"
    T k_dec16, FL_ALL, 2, "dec16"
    T k_dec32, FL_ALL, 2, "dec32"
    T k_addi64, FL_ALL, 0, "addi64"
    T k_subi32, FL_ALL, 0, "subi32"
    T k_andi16, FL_LOG, 0, "andi16"
    T k_lea, FL_ALL, 0, "lea64"
    T k_lea32, FL_ALL, 0, "lea32"
    dq 0

test_alu:
    lea rsi, [rel alu_table]
    jmp run_table

; ---------------------------------------------------------------- multiply, divide
K k_imul16, {imul ax, bx}
K k_imul32, {imul eax, ebx}
K k_imul64, {imul rax, rbx}
K k_imuli64, {imul rax, rbx, -77}
K k_mul8, {mul bl}
K k_mul32, {mul ebx}
K k_mul64, {mul rbx}
K k_imul1_16, {imul bx}
K k_imul1_64, {imul rbx}

k_div8:
    movzx ax, al
    and bl, 0x7e
    or bl, 1
    div bl
    xor r9, r9
    ret
k_idiv8:
    cbw
    and bl, 0x7e
    or bl, 1
    idiv bl
    xor r9, r9
    ret
k_div16:
    xor edx, edx
    and bx, 0x7ffe
    or bx, 1
    div bx
    xor r9, r9
    ret
k_idiv16:
    cwd
    and bx, 0x7ffe
    or bx, 1
    idiv bx
    xor r9, r9
    ret
k_div32:
    xor edx, edx
    or ebx, 1
    div ebx
    xor r9, r9
    ret
k_idiv32:
    cdq
    and ebx, 0x7ffffffe
    or ebx, 1
    idiv ebx
    xor r9, r9
    ret
k_div64:
    shr rdx, 1
    cmp rdx, rbx                    ; the quotient must fit: rdx < rbx
    jb .ok
    xor edx, edx
.ok:
    or rbx, 1
    cmp rdx, rbx
    jb .go
    xor edx, edx
.go:
    div rbx
    xor r9, r9
    ret
k_idiv64:
    cqo
    shr rbx, 1
    or rbx, 1
    idiv rbx
    xor r9, r9
    ret

muldiv_table:
    T k_imul16, 0x801, 0, "imul16"
    T k_imul32, 0x801, 0, "imul32"
    T k_imul64, 0x801, 0, "imul64"
    T k_imuli64, 0x801, 0, "imuli64"
    T k_mul8, 0x801, 0, "mul8"
    T k_mul32, 0x801, 0, "mul32"
    T k_mul64, 0x801, 0, "mul64"
    T k_imul1_16, 0x801, 0, "imul1_16"
    T k_imul1_64, 0x801, 0, "imul1_64"
    T k_div8, 0, 0, "div8"
    T k_idiv8, 0, 0, "idiv8"
    T k_div16, 0, 0, "div16"
    T k_idiv16, 0, 0, "idiv16"
    T k_div32, 0, 0, "div32"
    T k_idiv32, 0, 0, "idiv32"
    T k_div64, 0, 0, "div64"
    T k_idiv64, 0, 0, "idiv64"
    dq 0

test_muldiv:
    lea rsi, [rel muldiv_table]
    jmp run_table

; ---------------------------------------------------------------- shifts, rotates
; The count is rcx = rbx; only the flags defined for every count are kept (CF, ZF, SF, PF
; for shifts by a non-zero count; OF is defined for a count of 1 only).
%macro KS 2
%1:
    and ecx, 0x47                   ; counts 0-7 and 64-71 (masked by the CPU)
    %2
    pushfq
    pop r9
    cmp cl, 1
    je .one
    and r9, ~0x800
.one:
    ret
%endmacro

KS k_shl8, {shl al, cl}
KS k_shl16, {shl ax, cl}
KS k_shl32, {shl eax, cl}
KS k_shl64, {shl rax, cl}
KS k_shr8, {shr al, cl}
KS k_shr32, {shr eax, cl}
KS k_shr64, {shr rax, cl}
KS k_sar8, {sar al, cl}
KS k_sar16, {sar ax, cl}
KS k_sar32, {sar eax, cl}
KS k_sar64, {sar rax, cl}
KS k_rol8, {rol al, cl}
KS k_rol32, {rol eax, cl}
KS k_rol64, {rol rax, cl}
KS k_ror16, {ror ax, cl}
KS k_ror64, {ror rax, cl}
KS k_rcl32, {rcl eax, cl}
KS k_rcr64, {rcr rax, cl}
KS k_shld32, {shld eax, edx, cl}
KS k_shld64, {shld rax, rdx, cl}
KS k_shrd64, {shrd rax, rdx, cl}
K k_shl64i, {shl rax, 13}
K k_sar32i, {sar eax, 31}
K k_ror32i, {ror eax, 7}

shift_table:
    T k_shl8, 0x8c5, 0, "shl8"
    T k_shl16, 0x8c5, 0, "shl16"
    T k_shl32, 0x8c5, 0, "shl32"
    T k_shl64, 0x8c5, 0, "shl64"
    T k_shr8, 0x8c5, 0, "shr8"
    T k_shr32, 0x8c5, 0, "shr32"
    T k_shr64, 0x8c5, 0, "shr64"
    T k_sar8, 0x8c5, 0, "sar8"
    T k_sar16, 0x8c5, 0, "sar16"
    T k_sar32, 0x8c5, 0, "sar32"
    T k_sar64, 0x8c5, 0, "sar64"
    T k_rol8, 0x801, 0, "rol8"
    T k_rol32, 0x801, 0, "rol32"
    T k_rol64, 0x801, 0, "rol64"
    T k_ror16, 0x801, 0, "ror16"
    T k_ror64, 0x801, 0, "ror64"
    T k_rcl32, 0x801, 2, "rcl32"
    T k_rcr64, 0x801, 2, "rcr64"
    T k_shld32, 0x0c5, 0, "shld32"
    T k_shld64, 0x0c5, 0, "shld64"
    T k_shrd64, 0x0c5, 0, "shrd64"
    T k_shl64i, 0x0c5, 0, "shl64i"
    T k_sar32i, 0x0c5, 0, "sar32i"
    T k_ror32i, 0x001, 0, "ror32i"
    dq 0

test_shifts:
    lea rsi, [rel shift_table]
    jmp run_table

; ---------------------------------------------------------------- bit operations
K k_bt64, {bt rax, rbx}
K k_bts32, {bts eax, ebx}
K k_btr64, {btr rax, rbx}
K k_btc16, {btc ax, bx}
K k_bsf64, {bsf rax, rbx}
K k_bsr32, {bsr eax, ebx}
K k_bswap32, {bswap eax}
K k_bswap64, {bswap rax}
K k_cmovb, {cmp rax, rbx}, {cmovb rax, rdx}
K k_cmovg32, {cmp eax, ebx}, {cmovg eax, edx}
K k_setcc, {cmp rax, rbx}, {setl al}, {setbe ah}, {seto dl}, {setp dh}
K k_xadd, {xadd rax, rbx}, {mov rdx, rbx}
K k_cmpxchg, {cmpxchg rdx, rbx}
K k_cmpxchg32, {cmpxchg edx, ebx}
K k_xchg16, {xchg ax, bx}, {mov rdx, rbx}

bits_table:
    T k_bt64, 0x001, 0, "bt64"
    T k_bts32, 0x001, 0, "bts32"
    T k_btr64, 0x001, 0, "btr64"
    T k_btc16, 0x001, 0, "btc16"
    T k_bsf64, 0x040, 0, "bsf64"
    T k_bsr32, 0x040, 0, "bsr32"
    T k_bswap32, 0, 0, "bswap32"
    T k_bswap64, 0, 0, "bswap64"
    T k_cmovb, FL_ALL, 0, "cmovb"
    T k_cmovg32, FL_ALL, 0, "cmovg32"
    T k_setcc, FL_ALL, 0, "setcc"
    T k_xadd, FL_ALL, 0, "xadd64"
    T k_cmpxchg, FL_ALL, 0, "cmpxchg64"
    T k_cmpxchg32, FL_ALL, 0, "cmpxchg32"
    T k_xchg16, 0, 0, "xchg16"
    dq 0

test_bits:
    lea rsi, [rel bits_table]
    jmp run_table

; ---------------------------------------------------------------- moves
K k_movzx8, {movzx eax, bl}
K k_movzx16, {movzx rax, bx}
K k_movsx8, {movsx rax, bl}
K k_movsx16, {movsx eax, bx}
K k_movsxd, {movsxd rax, ebx}
K k_mov8h, {mov ah, bl}, {mov dh, bh}
K k_cwd, {cqo}, {cwde}

moves_table:
    T k_movzx8, 0, 0, "movzx8"
    T k_movzx16, 0, 0, "movzx16"
    T k_movsx8, 0, 0, "movsx8"
    T k_movsx16, 0, 0, "movsx16"
    T k_movsxd, 0, 0, "movsxd"
    T k_mov8h, 0, 0, "mov8h"
    T k_cwd, 0, 0, "cqo_cwde"
    dq 0

test_moves:
    lea rsi, [rel moves_table]
    jmp run_table

; ---------------------------------------------------------------- loads and stores
; For each width (1, 2, 4, 8, 16) and each offset 0-15: fill 48 bytes around the spot
; with a pattern, store a value there, then mix the 48 bytes and loads of every width
; (zero- and sign-extending) at that offset. Done once inside a page and once across
; the page boundary at XPAGE.
mem_round:                          ; rdi = base (16 bytes before the spot)
    xor r10, r10                    ; offset
.off:
    xor r11, r11                    ; width index 0-4
.width:
    mov rax, 0x0706050403020100     ; the pattern
    mov rdx, 0x0808080808080808
    mov [rdi], rax
    add rax, rdx
    mov [rdi + 8], rax
    add rax, rdx
    mov [rdi + 16], rax
    add rax, rdx
    mov [rdi + 24], rax
    add rax, rdx
    mov [rdi + 32], rax
    add rax, rdx
    mov [rdi + 40], rax
    lea rbx, [rdi + 16 + r10]
    mov rax, 0xf1e2d3c4b5a69788
    xor rax, r10
    cmp r11, 0
    jne .w2
    mov [rbx], al
    jmp .stored
.w2:
    cmp r11, 1
    jne .w4
    mov [rbx], ax
    jmp .stored
.w4:
    cmp r11, 2
    jne .w8
    mov [rbx], eax
    jmp .stored
.w8:
    cmp r11, 3
    jne .w16
    mov [rbx], rax
    jmp .stored
.w16:
    movq xmm0, rax
    pshufd xmm0, xmm0, 0x4e
    movdqu [rbx], xmm0
.stored:
    mov rcx, 6
    mov rdx, rdi
.mix:
    mov rax, [rdx]
    MIX rax
    add rdx, 8
    loop .mix
    movzx eax, byte [rbx]
    MIX rax
    movsx rax, byte [rbx + 1]
    MIX rax
    movzx eax, word [rbx]
    MIX rax
    movsx rax, word [rbx + 1]
    MIX rax
    mov eax, [rbx]
    MIX rax
    movsxd rax, dword [rbx + 3]
    MIX rax
    mov rax, [rbx]
    MIX rax
    mov rax, [rbx - 5]
    MIX rax
    movdqu xmm1, [rbx - 3]
    movq rax, xmm1
    MIX rax
    psrldq xmm1, 8
    movq rax, xmm1
    MIX rax
    inc r11
    cmp r11, 5
    jb .width
    inc r10
    cmp r10, 16
    jb .off
    ret

test_mem:
    xor r15, r15
    mov rdi, BUF + 0x100
    call mem_round
    lea rsi, [rel name_mem]
    call put_result
    xor r15, r15
    mov rdi, XPAGE - 24
    call mem_round
    lea rsi, [rel name_mem_xpage]
    call put_result
    ; read-modify-write forms and memory operands of ALU instructions
    xor r15, r15
    mov rdi, XPAGE - 6
    mov rax, 0x1122334455667788
    mov [rdi], rax
    mov rax, 0x99aabbccddeeff00
    mov [rdi + 8], rax
    mov ecx, 100
.rmw:
    add qword [rdi], rcx
    xor dword [rdi + 3], ecx
    rol word [rdi + 5], 3
    inc byte [rdi + 7]
    sub [rdi + 1], cl
    mov rax, [rdi]
    MIX rax
    mov rax, [rdi + 4]
    MIX rax
    loop .rmw
    lea rsi, [rel name_mem_rmw]
    jmp put_result

name_mem: db "mem", 0
name_mem_xpage: db "mem_xpage", 0
name_mem_rmw: db "mem_rmw", 0

; ---------------------------------------------------------------- string instructions
test_string:
    xor r15, r15
    mov rdi, BUF + 0x1000 - 300     ; across XPAGE
    mov rcx, 600
    mov al, 0x5a
    rep stosb
    lea rsi, [rel vals]
    mov rdi, BUF + 0x1000 - 61
    mov rcx, NVALS * 8
    rep movsb
    mov rsi, BUF + 0x1000 - 61
    mov rdi, BUF + 0x2000
    mov rcx, NVALS * 2
    rep movsd
    std
    mov rsi, BUF + 0x2000 + 7
    mov rdi, BUF + 0x2000 + 203
    mov rcx, 50
    rep movsb
    cld
    mov rsi, BUF + 0x1000 - 300
    mov rdi, BUF + 0x2000
    mov rcx, 256
    repe cmpsb
    MIX rcx
    pushfq
    pop rax
    and rax, FL_ALL
    MIX rax
    mov rdi, BUF + 0x1000 - 300
    mov rcx, 600
    mov al, 0xff
    repne scasb
    MIX rcx
    mov rdx, BUF + 0x1000 - 300
    mov rcx, 80
.mix:
    mov rax, [rdx]
    MIX rax
    add rdx, 8
    loop .mix
    lea rsi, [rel name_string]
    jmp put_result
name_string: db "string", 0

; ---------------------------------------------------------------- SSE integer ops
test_sse:
    xor r15, r15
    lea rsi, [rel vals]
    mov ecx, NVALS - 2
.loop:
    movdqu xmm0, [rsi]
    movdqu xmm1, [rsi + 8]
    movdqa xmm2, xmm0
    paddd xmm2, xmm1
    movdqa xmm3, xmm0
    psubq xmm3, xmm1
    pxor xmm3, xmm2
    movdqa xmm4, xmm0
    pcmpeqb xmm4, xmm1
    pand xmm4, xmm3
    movdqa xmm5, xmm1
    psllq xmm5, 3
    pmuludq xmm5, xmm0
    paddq xmm4, xmm5
    movq rax, xmm4
    MIX rax
    psrldq xmm4, 8
    movq rax, xmm4
    MIX rax
    pmovmskb eax, xmm2
    MIX rax
    add rsi, 8
    loop .loop
    lea rsi, [rel name_sse]
    jmp put_result
name_sse: db "sse", 0

; ---------------------------------------------------------------- exceptions
; The handlers record the vector, the error code and CR2, then continue at [recover].
idt_init:
    mov rdi, IDT
    lea rdx, [rel isr_stubs]
    xor ecx, ecx
.entry:
    mov rax, rdx
    mov [rdi], ax                   ; offset 15:0
    mov word [rdi + 2], 0x08
    mov word [rdi + 4], 0x8e00      ; present interrupt gate
    shr rax, 16
    mov [rdi + 6], ax
    shr rax, 16
    mov [rdi + 8], eax
    mov dword [rdi + 12], 0
    add rdi, 16
    add rdx, 16
    inc ecx
    cmp ecx, 256
    jb .entry
    lidt [rel idt_desc]
    ret

align 8
idt_desc:
    dw 256 * 16 - 1
    dq IDT

exc_vector: dq 0
exc_error:  dq 0
exc_cr2:    dq 0
exc_count:  dq 0
recover:    dq 0
irq_count:  dq 0

isr_common:                         ; [rsp] vector, [rsp+8] error, then the CPU's frame
    push rax
    push rdx
    mov rax, [rsp + 16]
    cmp rax, 0x20                   ; the timer (IRQ 0 after the PIC remap)
    je .irq0
    mov [rel exc_vector], rax
    mov rax, [rsp + 24]
    mov [rel exc_error], rax
    xor edx, edx
    cmp qword [rel exc_vector], 14  ; CR2 only means something for #PF
    jne .cr2
    mov rdx, cr2
.cr2:
    mov [rel exc_cr2], rdx
    inc qword [rel exc_count]
    mov rax, [rel recover]
    test rax, rax
    jz .unexpected
    mov [rsp + 32], rax             ; the frame's RIP
    mov qword [rel recover], 0
    pop rdx
    pop rax
    add rsp, 16
    iretq
.irq0:
    inc qword [rel irq_count]
    mov al, 0x20
    out 0x20, al                    ; EOI
    pop rdx
    pop rax
    add rsp, 16
    iretq
.unexpected:
    lea rsi, [rel msg_unexpected]
    call puts
    mov rax, [rel exc_vector]
    call put_hex
    mov rax, [rsp + 32]
    call put_hex
    call put_crlf
.halt:
    cli
    hlt
    jmp .halt

align 16
isr_stubs:
%assign v 0
%rep 256
%if v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30
    push qword v
    jmp isr_common
%else
    push qword 0
    push qword v
    jmp isr_common
%endif
    align 16
%assign v v + 1
%endrep

; print name (rsi), vector, error code, CR2
put_exc:
    call puts
    mov rax, [rel exc_vector]
    call put_hex
    mov rax, [rel exc_error]
    call put_hex
    mov rax, [rel exc_cr2]
    call put_hex
    jmp put_crlf

%macro EXC 2-*                      ; name, the faulting instructions
    [section .names]
%%name: db %1, 0
    __?SECT?__
    lea rax, [rel %%after]
    mov [rel recover], rax
    mov qword [rel exc_vector], -1
%rep %0 - 1
%rotate 1
    %1
%endrep
%%after:
    lea rsi, [rel %%name]
    call put_exc
%endmacro

test_exceptions:
    EXC "exc_de", {xor ecx, ecx}, {div ecx}
    EXC "exc_ud", {ud2}
    EXC "exc_bp", {int3}
    EXC "exc_int80", {int 0x80}
    EXC "exc_gp", {mov rax, 0x8000000000000000}, {mov rax, [rax]}
    EXC "pf_read", {mov rax, [NOPAGE + 0x123]}
    EXC "pf_write", {mov qword [NOPAGE + 0xff8], 1}
    EXC "pf_write_ro", {mov byte [ROPAGE + 0x10], 1}
    EXC "pf_fetch", {mov rax, NOPAGE + 0x40}, {jmp rax}
    EXC "pf_xpage", {mov rax, [NOPAGE - 4]}
    mov al, [ROPAGE + 0x10]         ; reading the read-only page works
    movzx rax, al
    mov [rel exc_vector], rax
    lea rsi, [rel name_ro_read]
    call put_exc
    mov rax, [rel exc_count]
    lea rsi, [rel name_exc_count]
    call puts
    call put_hex
    jmp put_crlf
name_ro_read: db "ro_read", 0
name_exc_count: db "exc_count", 0

; ---------------------------------------------------------------- self-modifying code
; A routine "mov eax, imm32; ret" is rewritten and called again and again (the JIT must
; drop blocks whose code changes).
test_smc:
    xor r15, r15
    mov ecx, 300
.loop:
    mov byte [SMC], 0xb8            ; mov eax, imm32
    mov [SMC + 1], ecx
    mov byte [SMC + 5], 0xc3        ; ret
    mov rax, SMC
    call rax
    MIX rax
    mov rax, SMC
    call rax
    MIX rax
    loop .loop
    lea rsi, [rel name_smc]
    jmp put_result
name_smc: db "smc", 0

; ---------------------------------------------------------------- the timer interrupt
; The PIC sends IRQ 0 (the PIT at about 1 kHz) to vector 0x20; wait for 3 of them.
test_irq:
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al                    ; master base 0x20
    mov al, 0x28
    out 0xa1, al                    ; slave base 0x28
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
    mov al, 0xfe
    out 0x21, al                    ; only IRQ 0
    mov al, 0xff
    out 0xa1, al
    mov al, 0x34
    out 0x43, al                    ; PIT channel 0, rate generator
    mov ax, 1193
    out 0x40, al
    mov al, ah
    out 0x40, al
    sti
.wait:
    hlt
    cmp qword [rel irq_count], 3
    jb .wait
    cli
    mov rax, [rel irq_count]
    cmp rax, 3
    jb .low
    mov rax, 3
.low:
    lea rsi, [rel name_irq]
    call puts
    call put_hex
    jmp put_crlf
name_irq: db "irq0", 0

; ---------------------------------------------------------------- a long hot loop
; CRC-32 (bitwise) of 64 KiB of generated data: long enough for every block to be hot.
test_loop:
    mov rdi, BUF
    mov rcx, 0x4000 / 8
    mov rax, 0x0123456789abcdef
.fill:
    mov [rdi], rax
    ror rax, 7
    imul rax, r14
    add rdi, 8
    loop .fill
    mov r8d, 4                      ; 4 passes over 16 KiB
    mov edx, 0xffffffff
.pass:
    mov rsi, BUF
    mov rcx, 0x4000
.byte:
    movzx eax, byte [rsi]
    xor edx, eax
    mov ebx, 8
.bit:
    shr edx, 1
    jnc .nox
    xor edx, 0xedb88320
.nox:
    dec ebx
    jnz .bit
    inc rsi
    dec rcx
    jnz .byte
    dec r8d
    jnz .pass
    not edx
    mov eax, edx
    lea rsi, [rel name_crc]
    call puts
    call put_hex
    jmp put_crlf
name_crc: db "crc32", 0

msg_banner: db "x86-insn v1", 13, 10, 0
msg_done: db "ALL DONE", 13, 10, 0
msg_unexpected: db "UNEXPECTED EXCEPTION", 0

section .names
    align 16, db 0
image_end:
