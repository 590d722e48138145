; QemuWeb x86 BIOS test guest (NASM syntax, flat binary).
;
; Layout on disk (512-byte sectors):
;   LBA 0          boot sector, loaded by the BIOS at 0000:7C00
;   LBA 1..15      the rest of this program, loaded by the boot sector at 0000:7E00
;   LBA 16..63     reserved (zero); the guest refuses to write below DATA_START_LBA
;   LBA 64..       data region the `write` command may change
;
; It prints the banner on COM1 (16550 UART at 0x3F8, programmed directly, polled) and on
; the VGA text screen (B800:0000), then runs a command loop on COM1. Typed characters are
; not echoed; a line ends with CR or LF. Commands and their single-line replies:
;   echo TEXT        -> TEXT
;   read N           -> SECTOR N CRC32 XXXXXXXX   (CRC-32/ISO-HDLC of the 512 bytes, as zlib)
;   write N BB       -> WROTE SECTOR N FILL BB    (every byte of sector N set to hex byte BB)
;   info             -> DISK SECTORS N            (from int 13h AH=48h)
;   gfx              -> GFX 320x200               (VGA mode 13h via int 10h, DAC entries 0-7
;                       set to R = bit 2, G = bit 1, B = bit 0 of the index (each 0 or 63),
;                       pixel (x, y) = ((x >> 4) xor (y >> 3)) and 7)
;   hline Y BB       -> HLINE Y FILL BB           (graphics mode: row Y, 0-199, set to colour BB)
;   text             -> TEXT 80x25                (back to mode 3, the banner on row 0 again)
; Errors: "ERR unknown command", "ERR bad number", "ERR protected sector",
; "ERR disk status XX" (XX = the BIOS status in AH), "ERR not in graphics mode". N is decimal, BB is two hex digits.
; Every reply ends with CR LF and is followed by the prompt "> ".
; Sectors are read and written with the int 13h extensions (AH=42h/43h, LBA), which
; SeaBIOS provides for IDE/AHCI, virtio-blk and virtio-scsi disks alike.

bits 16
org 0x7c00

STAGE2_SECTORS  equ 15
DATA_START_LBA  equ 64
COM1            equ 0x3f8
SECTOR_BUF      equ 0x0600          ; 512 bytes, 0000:0600
LINE_BUF        equ 0x0a00          ; LINE_MAX + 1 bytes, 0000:0A00
LINE_MAX        equ 120

; ---------------------------------------------------------------- boot sector
start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    cld
    mov [boot_drive], dl
    mov si, dap_load
    mov ah, 0x42
    int 0x13
    jc .fail
    jmp stage2
.fail:
    mov si, msg_load_fail
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
dap_load:
    db 16, 0
    dw STAGE2_SECTORS
    dw 0x7e00, 0
    dq 1
boot_drive:
    db 0x80
msg_load_fail:
    db "QEMUWEB-GUEST x86 load failed", 13, 10, 0

    times 510 - ($ - $$) db 0
    dw 0xaa55

; ---------------------------------------------------------------- stage 2
stage2:
    call serial_init
    call vga_banner
    mov si, msg_banner
    call puts
    jmp main_loop

; the banner on the VGA text screen, row 0, white on blue
vga_banner:
    push es
    mov ax, 0xb800
    mov es, ax
    xor di, di
    mov si, msg_banner
    mov ah, 0x1f
.vga:
    lodsb
    test al, al
    jz .vga_done
    cmp al, 13
    jb .vga
    stosw
    jmp .vga
.vga_done:
    pop es
    ret

main_loop:
    mov si, msg_prompt
    call puts
    call read_line
    jcxz main_loop
    mov si, LINE_BUF
    mov di, word_echo
    call match_word
    jnc cmd_echo
    mov di, word_read
    call match_word
    jnc cmd_read
    mov di, word_write
    call match_word
    jnc cmd_write
    mov di, word_info
    call match_word
    jnc cmd_info
    mov di, word_gfx
    call match_word
    jnc cmd_gfx
    mov di, word_hline
    call match_word
    jnc cmd_hline
    mov di, word_text
    call match_word
    jnc cmd_text
    mov si, msg_unknown
    call puts
    jmp main_loop

; echo TEXT: SI points just after "echo"
cmd_echo:
    cmp byte [si], ' '
    jne .out
    inc si
.out:
    call puts
    call crlf
    jmp main_loop

cmd_read:
    call skip_spaces
    call parse_dec
    jc bad_number
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
    mov [cur_lba], eax
    mov ah, 0x42
    call disk_io
    jc disk_error
    mov si, msg_sector
    call puts
    mov eax, [cur_lba]
    call put_dec
    mov si, msg_crc
    call puts
    call crc32_sector
    call put_hex32
    call crlf
    jmp main_loop

cmd_write:
    call skip_spaces
    call parse_dec
    jc bad_number
    mov [cur_lba], eax
    call skip_spaces
    call parse_hex_byte
    jc bad_number
    mov [fill_byte], al
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
    cmp dword [cur_lba], DATA_START_LBA
    jb .protected
    mov al, [fill_byte]
    mov di, SECTOR_BUF
    mov cx, 512
    rep stosb
    mov ah, 0x43
    call disk_io
    jc disk_error
    mov si, msg_wrote
    call puts
    mov eax, [cur_lba]
    call put_dec
    mov si, msg_fill
    call puts
    mov al, [fill_byte]
    call put_hex8
    call crlf
    jmp main_loop
.protected:
    mov si, msg_protected
    call puts
    jmp main_loop

cmd_info:
    mov si, SECTOR_BUF
    mov word [si], 0x1a
    mov ah, 0x48
    mov dl, [boot_drive]
    int 0x13
    jc disk_error
    mov si, msg_info
    call puts
    mov eax, [SECTOR_BUF + 0x10]
    call put_dec
    call crlf
    jmp main_loop

; gfx: mode 13h, the DAC's first 8 entries, the pattern
cmd_gfx:
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
    mov ax, 0x0013
    int 0x10
    mov byte [gfx_mode], 1
    mov dx, 0x3c8               ; DAC write index 0, then R, G, B of entries 0..7
    xor al, al
    out dx, al
    inc dx
    xor bl, bl
.pal:
    mov bh, 4                   ; bit 2 (R), bit 1 (G), bit 0 (B)
.chan:
    xor al, al
    test bl, bh
    jz .dark
    mov al, 63
.dark:
    out dx, al
    shr bh, 1
    jnz .chan
    inc bl
    cmp bl, 8
    jb .pal
    push es
    mov ax, 0xa000
    mov es, ax
    xor di, di
    xor dx, dx                  ; y
.row:
    xor cx, cx                  ; x
.px:
    mov ax, cx
    shr ax, 4
    mov bx, dx
    shr bx, 3
    xor ax, bx
    and al, 7
    stosb
    inc cx
    cmp cx, 320
    jb .px
    inc dx
    cmp dx, 200
    jb .row
    pop es
    mov si, msg_gfx
    call puts
    jmp main_loop

; hline Y BB: row Y of the mode 13h screen set to colour BB
cmd_hline:
    call skip_spaces
    call parse_dec
    jc bad_number
    cmp eax, 200
    jae bad_number
    mov [cur_lba], eax
    call skip_spaces
    call parse_hex_byte
    jc bad_number
    mov [fill_byte], al
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
    cmp byte [gfx_mode], 0
    je .text
    push es
    mov ax, 0xa000
    mov es, ax
    imul di, [cur_lba], 320
    mov al, [fill_byte]
    mov cx, 320
    rep stosb
    pop es
    mov si, msg_hline
    call puts
    mov eax, [cur_lba]
    call put_dec
    mov si, msg_fill
    call puts
    mov al, [fill_byte]
    call put_hex8
    call crlf
    jmp main_loop
.text:
    mov si, msg_not_gfx
    call puts
    jmp main_loop

; text: back to mode 3 with the banner
cmd_text:
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
    mov ax, 0x0003
    int 0x10
    mov byte [gfx_mode], 0
    call vga_banner
    mov si, msg_text
    call puts
    jmp main_loop

bad_number:
    mov si, msg_bad_number
    call puts
    jmp main_loop

; AH = BIOS status
disk_error:
    push ax
    mov si, msg_disk_error
    call puts
    pop ax
    mov al, ah
    call put_hex8
    call crlf
    jmp main_loop

; AH = 0x42 (read) or 0x43 (write) one sector [cur_lba] <-> SECTOR_BUF. CF on error.
disk_io:
    push ax
    mov word [dap_io + 2], 1    ; the BIOS leaves the count it transferred here
    mov eax, [cur_lba]
    mov [dap_io + 8], eax
    mov dword [dap_io + 12], 0
    mov si, dap_io
    pop ax
    mov al, 0
    mov dl, [boot_drive]
    int 0x13
    ret

; CRC-32 (reflected, polynomial 0xEDB88320, init and final xor 0xFFFFFFFF) of SECTOR_BUF -> EAX
crc32_sector:
    mov si, SECTOR_BUF
    mov cx, 512
    mov edx, 0xffffffff
.byte:
    lodsb
    xor dl, al
    mov bx, 8
.bit:
    shr edx, 1
    jnc .no_xor
    xor edx, 0xedb88320
.no_xor:
    dec bx
    jnz .bit
    loop .byte
    not edx
    mov eax, edx
    ret

; ---------------------------------------------------------------- parsing
; SI -> line; DI -> zero-terminated word. CF clear and SI past the word if the line
; starts with the word followed by a space or the end of the line; else CF set, SI kept.
match_word:
    push si
.cmp:
    mov al, [di]
    test al, al
    jz .end
    cmp al, [si]
    jne .no
    inc si
    inc di
    jmp .cmp
.end:
    mov al, [si]
    test al, al
    jz .yes
    cmp al, ' '
    je .yes
.no:
    pop si
    stc
    ret
.yes:
    add sp, 2
    clc
    ret

skip_spaces:
    cmp byte [si], ' '
    jne .done
    inc si
    jmp skip_spaces
.done:
    ret

; decimal number at SI -> EAX, SI advanced; CF if no digit or overflow
parse_dec:
    xor eax, eax
    xor cx, cx
.digit:
    movzx edx, byte [si]
    sub dl, '0'
    jb .end
    cmp dl, 9
    ja .end
    imul eax, eax, 10
    jo .bad
    add eax, edx
    jc .bad
    inc si
    inc cx
    jmp .digit
.end:
    test cx, cx
    jz .bad
    clc
    ret
.bad:
    stc
    ret

; exactly two hex digits at SI -> AL, SI advanced; CF on error
parse_hex_byte:
    call hex_digit
    jc .bad
    mov ah, al
    shl ah, 4
    call hex_digit
    jc .bad
    or al, ah
    mov ah, [si]
    test ah, ah
    jz .ok
    cmp ah, ' '
    jne .bad
.ok:
    clc
    ret
.bad:
    stc
    ret

hex_digit:
    mov al, [si]
    cmp al, '0'
    jb .bad
    cmp al, '9'
    jbe .num
    or al, 0x20
    cmp al, 'a'
    jb .bad
    cmp al, 'f'
    ja .bad
    sub al, 'a' - 10
    jmp .ok
.num:
    sub al, '0'
.ok:
    inc si
    clc
    ret
.bad:
    stc
    ret

; ---------------------------------------------------------------- serial
serial_init:
    mov dx, COM1 + 1        ; IER: no interrupts
    xor al, al
    out dx, al
    mov dx, COM1 + 3        ; LCR: DLAB
    mov al, 0x80
    out dx, al
    mov dx, COM1            ; divisor 1 = 115200 baud
    mov al, 1
    out dx, al
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov dx, COM1 + 3        ; 8N1
    mov al, 0x03
    out dx, al
    mov dx, COM1 + 2        ; FIFOs on and cleared
    mov al, 0xc7
    out dx, al
    mov dx, COM1 + 4        ; DTR, RTS
    mov al, 0x03
    out dx, al
    ret

; AL -> COM1
putc:
    push dx
    push ax
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

; COM1 -> AL
getc:
    push dx
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x01
    jz .wait
    mov dx, COM1
    in al, dx
    pop dx
    ret

; zero-terminated string at SI -> COM1
puts:
    lodsb
    test al, al
    jz .done
    call putc
    jmp puts
.done:
    ret

crlf:
    mov al, 13
    call putc
    mov al, 10
    jmp putc

; a line into LINE_BUF, zero-terminated, length in CX (0 for an empty line)
read_line:
    mov di, LINE_BUF
    xor cx, cx
.next:
    call getc
    cmp al, 13
    je .done
    cmp al, 10
    je .done
    cmp al, 8
    je .back
    cmp al, 0x7f
    je .back
    cmp al, ' '
    jb .next
    cmp cx, LINE_MAX
    jae .next
    stosb
    inc cx
    jmp .next
.back:
    jcxz .next
    dec di
    dec cx
    jmp .next
.done:
    mov byte [di], 0
    ret

; EAX -> 8 uppercase hex digits
put_hex32:
    mov cx, 8
.nibble:
    rol eax, 4
    push eax
    and al, 0x0f
    call put_nibble
    pop eax
    loop .nibble
    ret

; AL -> 2 uppercase hex digits
put_hex8:
    push ax
    shr al, 4
    call put_nibble
    pop ax
    and al, 0x0f
put_nibble:
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'A' - '9' - 1
.out:
    jmp putc

; EAX -> decimal
put_dec:
    mov ecx, 10
    xor bx, bx
.div:
    xor edx, edx
    div ecx
    push dx
    inc bx
    test eax, eax
    jnz .div
.out:
    pop ax
    add al, '0'
    call putc
    dec bx
    jnz .out
    ret

; ---------------------------------------------------------------- data
align 4
dap_io:
    db 16, 0
    dw 1
    dw SECTOR_BUF, 0
    dq 0
cur_lba:    dd 0
fill_byte:  db 0
gfx_mode:   db 0

msg_banner:     db "QEMUWEB-GUEST x86 v1", 13, 10, 0
msg_prompt:     db "> ", 0
msg_unknown:    db "ERR unknown command", 13, 10, 0
msg_bad_number: db "ERR bad number", 13, 10, 0
msg_protected:  db "ERR protected sector", 13, 10, 0
msg_disk_error: db "ERR disk status ", 0
msg_sector:     db "SECTOR ", 0
msg_crc:        db " CRC32 ", 0
msg_wrote:      db "WROTE SECTOR ", 0
msg_fill:       db " FILL ", 0
msg_info:       db "DISK SECTORS ", 0
word_echo:      db "echo", 0
word_read:      db "read", 0
word_write:     db "write", 0
word_info:      db "info", 0
word_gfx:       db "gfx", 0
word_hline:     db "hline", 0
word_text:      db "text", 0
msg_gfx:        db "GFX 320x200", 13, 10, 0
msg_hline:      db "HLINE ", 0
msg_text:       db "TEXT 80x25", 13, 10, 0
msg_not_gfx:    db "ERR not in graphics mode", 13, 10, 0

%if ($ - $$) > (1 + STAGE2_SECTORS) * 512
%error "guest code does not fit in the sectors the boot sector loads"
%endif
    times (1 + STAGE2_SECTORS) * 512 - ($ - $$) db 0
