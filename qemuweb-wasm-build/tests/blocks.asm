; The guest of `scripts/bench-jit --blocks`: a boot sector (nasm -f bin) that runs the same
; few instructions 200 million times in differently shaped loops and prints a line on the
; serial port after each, so that the time between two lines is one loop's time:
;   one-block    add, xor, dec, jnz: one translation block that jumps to itself
;   two-blocks   the same work split by a jmp: two blocks, chained, per iteration
;   four-blocks  the same with two more jmps (and a nop): four chained blocks
;   memory       one block with a load and a store (the softmmu TLB's fast path twice)
;   rotate       one-block with a rol (its flags)
;   indirect     two-blocks with the jmp through a register: the block's exit is an
;                indirect jump (TCG's lookup_and_goto_ptr), not a chained one
;   call-return  the work split by a call and a ret: three blocks, a push and a pop, and
;                the ret's indirect jump
; The differences between the first three give the cost of a chained jump from one
; compiled block to the next, indirect against two-blocks the extra cost of an indirect
; jump; native TCG is the reference (`qemu-system-x86_64 -M pc`).
; Real mode with 32-bit operands: the loops need nothing set up.
bits 16
org 0x7c00
N equ 200000000

start:
  cli                     ; a stack below the code, data segment 0 (puts reads DS:SI)
  xor ax, ax
  mov ss, ax
  mov sp, 0x7c00
  mov ds, ax
  mov si, msg_start
  call puts

  mov ecx, N
  xor eax, eax
  mov ebx, 1
.one:
  add eax, ebx
  xor ebx, eax
  dec ecx
  jnz .one
  mov si, msg_one
  call puts

  mov ecx, N
.two1:
  add eax, ebx
  jmp .two2
.two2:
  xor ebx, eax
  dec ecx
  jnz .two1
  mov si, msg_two
  call puts

  mov ecx, N
.four1:
  add eax, ebx
  jmp .four2
.four2:
  xor ebx, eax
  jmp .four3
.four3:
  nop
  jmp .four4
.four4:
  dec ecx
  jnz .four1
  mov si, msg_four
  call puts

  mov ecx, N
  mov di, 0x8000
.mem:
  add eax, [di]
  mov [di + 4], eax
  xor ebx, eax
  dec ecx
  jnz .mem
  mov si, msg_mem
  call puts

  mov ecx, N
.rot:
  add eax, ebx
  xor ebx, eax
  rol ebx, 3
  dec ecx
  jnz .rot
  mov si, msg_rot
  call puts

  mov ecx, N
  mov dx, .ind2
.ind1:
  add eax, ebx
  jmp dx
.ind2:
  xor ebx, eax
  dec ecx
  jnz .ind1
  mov si, msg_ind
  call puts

  mov ecx, N
  mov sp, 0xa000          ; the stack off the code's page: a push there would be a write
                          ; to translated code, which invalidates it (0x8000 is memory's)
.cr:
  add eax, ebx
  call .crf
  dec ecx
  jnz .cr
  mov si, msg_cr
  call puts

  mov si, msg_end
  call puts
.halt:
  hlt
  jmp .halt

.crf:
  xor ebx, eax
  ret

; Writes the NUL-terminated string at SI and a newline to COM1.
puts:
  mov dx, 0x3f8
.next:
  lodsb
  test al, al
  jz .done
  out dx, al
  jmp .next
.done:
  mov al, 10
  out dx, al
  ret

msg_start db 'start', 0
msg_one   db 'one-block', 0
msg_two   db 'two-blocks', 0
msg_four  db 'four-blocks', 0
msg_mem   db 'memory', 0
msg_rot   db 'rotate', 0
msg_ind   db 'indirect', 0
msg_cr    db 'call-return', 0
msg_end   db 'END', 0

times 510 - ($ - $$) db 0
dw 0xaa55
