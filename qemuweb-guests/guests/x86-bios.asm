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
;   redraw N [HZ]    -> REDRAW N                  (graphics mode: the whole screen filled N
;                       times, 1-65535, fill k (from 0) with colour 1 + k mod 7, so every
;                       fill changes every pixel; for display benchmarks. At full speed, or
;                       with HZ (1-1000) paced: the PIT ticks HZ times a second meanwhile
;                       (18.2 again after) and each fill starts on a new tick)
;   keys [bios]      -> KEYS ON                   (keyboard and mouse mode, below)
;
; Keyboard and mouse mode (`keys`): the text screen is cleared to the banner on row 0, the
; VGA cursor is hidden (so a screenshot does not depend on its blinking), IRQ1 and IRQ12 are masked so
; the BIOS leaves the i8042's bytes alone, the PS/2 mouse is enabled (aux port on, 0xF4),
; and every byte the controller delivers is reported on COM1:
;   K XX             a keyboard byte (scan code set 1 as the controller translates it)
;   M BB XX YY       a 3-byte PS/2 mouse packet (buttons/signs, dx, dy; dy up positive)
;   B SS AA          with `keys bios` only: a key the BIOS read (int 16h: scan code,
;                    character), from a keyboard the i8042 does not see, such as a USB
;                    keyboard SeaBIOS drives (QEMU sends keys to a usb-kbd rather than the
;                    PS/2 keyboard); interrupts are on between polls so that SeaBIOS's
;                    timer handler reads it (not in plain `keys`: native QEMU's PS/2 lost
;                    keys now and then with them on)
;   LINE TEXT        Enter was pressed: the text typed since the last Enter (US layout,
;                    letters, digits, punctuation, Shift; Backspace erases)
; Typed characters also appear on the VGA text screen from row 2 (grey on black), one row
; per line. Escape, or any byte on COM1, ends the mode: "KEYS OFF", mouse streaming off,
; the interrupt masks restored.
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
PIT_HZ          equ 1193182         ; the PIT's input clock
BDA_KBD_HEAD    equ 0x041a          ; the BIOS's keyboard buffer: next key to read
BDA_KBD_TAIL    equ 0x041c          ; and where the next key goes
SECTOR_BUF      equ 0x0600          ; 512 bytes, 0000:0600
LINE_BUF        equ 0x0a00          ; LINE_MAX + 1 bytes, 0000:0A00
LINE_MAX        equ 120
KEY_BUF         equ 0x0c00          ; KEY_MAX + 1 bytes, 0000:0C00: the line typed in `keys`
KEY_MAX         equ 78
KEY_ROW         equ 2               ; the first VGA row `keys` types on
KEY_ROWS        equ 22

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
    cmp al, ' '                 ; CR and LF are for the serial port only
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
    mov di, word_keys
    call match_word
    jnc cmd_keys
    mov di, word_redraw
    call match_word
    jnc cmd_redraw
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

; redraw N [HZ]: the whole mode 13h screen filled N times, fill k with colour 1 + k mod 7;
; with HZ the PIT ticks HZ times a second meanwhile and each fill waits for a tick
cmd_redraw:
    call skip_spaces
    call parse_dec
    jc bad_number
    test eax, eax
    jz bad_number
    cmp eax, 65535
    ja bad_number
    mov [cur_lba], eax
    mov word [redraw_hz], 0
    call skip_spaces
    cmp byte [si], 0
    je .args_done
    call parse_dec
    jc bad_number
    test eax, eax
    jz bad_number
    cmp eax, 1000
    ja bad_number
    mov [redraw_hz], ax
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
.args_done:
    cmp byte [gfx_mode], 0
    je cmd_hline.text
    xor ax, ax
    mov fs, ax                  ; FS:046C, the BIOS tick count
    cmp word [redraw_hz], 0
    je .start
    mov eax, PIT_HZ             ; PIT channel 0, mode 3, divisor PIT_HZ / HZ
    xor edx, edx
    movzx ecx, word [redraw_hz]
    div ecx
    mov cx, ax
    mov al, 0x36
    out 0x43, al
    mov al, cl
    out 0x40, al
    mov al, ch
    out 0x40, al
.start:
    push es
    mov ax, 0xa000
    mov es, ax
    mov bx, [cur_lba]           ; fills left
    mov dl, 1                   ; this fill's colour
.fill:
    cmp word [redraw_hz], 0
    je .draw
    mov si, [fs:0x046c]
.tick:
    sti
    hlt                         ; until the next interrupt; a fill starts on a new tick
    cmp si, [fs:0x046c]
    je .tick
    cli
.draw:
    mov al, dl
    mov ah, al
    mov cx, ax
    shl eax, 16
    mov ax, cx                  ; EAX = the colour in each byte
    xor di, di
    mov cx, 320 * 200 / 4
    rep stosd
    inc dl
    cmp dl, 8
    jb .next
    mov dl, 1
.next:
    dec bx
    jnz .fill
    pop es
    cmp word [redraw_hz], 0
    je .reply
    mov al, 0x36                ; the BIOS's 18.2 Hz again (divisor 65536)
    out 0x43, al
    xor al, al
    out 0x40, al
    out 0x40, al
.reply:
    mov si, msg_redraw
    call puts
    mov eax, [cur_lba]
    call put_dec
    call crlf
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

; keys: keyboard and mouse bytes on COM1 and typed text on the screen, until Escape
cmd_keys:
    call skip_spaces
    mov byte [keys_bios], 0
    cmp byte [si], 0
    je .args_done
    mov di, word_bios
    call match_word
    jc bad_number
    call skip_spaces
    cmp byte [si], 0
    jne bad_number
    mov byte [keys_bios], 1
.args_done:
    mov dx, 0x3d4               ; CRTC cursor start: bit 5 hides the cursor
    mov al, 0x0a
    out dx, al
    inc dx
    in al, dx
    or al, 0x20
    out dx, al
    push es                     ; a blank screen with the banner on row 0
    mov ax, 0xb800
    mov es, ax
    xor di, di
    mov ax, 0x0720
    mov cx, 80 * 25
    rep stosw
    pop es
    call vga_banner
    in al, 0x21                 ; mask IRQ1 (master) and IRQ12 (slave)
    mov [pic_masks], al
    or al, 0x02
    out 0x21, al
    in al, 0xa1
    mov [pic_masks + 1], al
    or al, 0x10
    out 0xa1, al
    call kbc_drain
    mov al, 0xa8                ; aux port on
    call kbc_cmd
    mov al, 0xf4                ; mouse: enable streaming
    call mouse_cmd
    call kbc_drain
    mov ax, [BDA_KBD_TAIL]      ; the BIOS's key buffer emptied
    mov [BDA_KBD_HEAD], ax
    mov byte [key_len], 0
    mov byte [key_row], KEY_ROW
    mov byte [key_shift], 0
    mov byte [key_e0], 0
    mov byte [mouse_n], 0
    mov si, msg_keys_on
    call puts
.poll:
    mov dx, COM1 + 5
    in al, dx
    test al, 0x01
    jnz .serial
    in al, 0x64
    test al, 0x01
    jnz .kbc
    cmp byte [keys_bios], 0
    je .poll
    sti                         ; the timer runs: SeaBIOS reads USB keyboards from it
    nop
    cli
    mov ax, [BDA_KBD_HEAD]      ; a key in the BIOS's buffer (not from the masked IRQ1)
    cmp ax, [BDA_KBD_TAIL]
    je .poll
    xor ah, ah
    int 0x16
    call bios_key
    jc .done
    jmp .poll
.kbc:
    mov ah, al
    in al, 0x60
    test ah, 0x20
    jnz .mouse
    call key_byte
    jc .done
    jmp .poll
.mouse:
    call mouse_byte
    jmp .poll
.serial:
    mov dx, COM1
    in al, dx
.done:
    mov al, 0xf5                ; mouse: streaming off
    call mouse_cmd
    call kbc_drain
    mov al, [pic_masks]
    out 0x21, al
    mov al, [pic_masks + 1]
    out 0xa1, al
    mov si, msg_keys_off
    call puts
    jmp main_loop

; AL -> the i8042's command port, once it takes input
kbc_cmd:
    push ax
    call kbc_wait_in
    pop ax
    out 0x64, al
    ret

; AL -> the mouse (0xD4 then the byte), its acknowledgement read and dropped
mouse_cmd:
    push ax
    mov al, 0xd4
    call kbc_cmd
    call kbc_wait_in
    pop ax
    out 0x60, al
    jmp kbc_read_timeout

; waits until the controller's input buffer is empty
kbc_wait_in:
    in al, 0x64
    test al, 0x02
    jnz kbc_wait_in
    ret

; reads and drops what the controller holds
kbc_drain:
    in al, 0x64
    test al, 0x01
    jz .done
    in al, 0x60
    jmp kbc_drain
.done:
    ret

; a byte from the controller -> AL, waiting up to two timer ticks (CF if none came)
kbc_read_timeout:
    push es
    push bx
    xor ax, ax
    mov es, ax
    mov bx, [es:0x046c]
    add bx, 3
.wait:
    in al, 0x64
    test al, 0x01
    jnz .got
    sti
    hlt                         ; until the next interrupt (the timer at least)
    cmp bx, [es:0x046c]
    jne .wait
    stc
    jmp .out
.got:
    in al, 0x60
    clc
.out:
    pop bx
    pop es
    ret

; a keyboard byte in AL: reported, and typed (CF set for Escape pressed)
key_byte:
    push ax
    mov si, msg_key
    call puts
    pop ax
    push ax
    call put_hex8
    call crlf
    pop ax
    cmp al, 0xe0
    je .prefix
    cmp byte [key_e0], 0
    mov byte [key_e0], 0
    jne type_char.ok            ; an extended key: nothing to type
    cmp al, 0x01
    je .escape
    cmp al, 0x2a
    je .shift_down
    cmp al, 0x36
    je .shift_down
    cmp al, 0xaa
    je .shift_up
    cmp al, 0xb6
    je .shift_up
    cmp al, 0x1c
    je .enter
    cmp al, 0x0e
    je .backspace
    cmp al, KEYMAP_LEN
    jae type_char.ok            ; a release, or a key with no character
    movzx bx, al
    mov al, [keymap + bx]
    cmp byte [key_shift], 0
    je .have
    mov al, [keymap_shift + bx]
.have:
    test al, al
    jz type_char.ok
    jmp type_char
.prefix:
    mov byte [key_e0], 1
    clc
    ret
.shift_down:
    mov byte [key_shift], 1
    clc
    ret
.shift_up:
    mov byte [key_shift], 0
    clc
    ret
.escape:
    mov al, 0x1b
    jmp type_char
.enter:
    mov al, 0x0d
    jmp type_char
.backspace:
    mov al, 0x08
    jmp type_char

; a key the BIOS read (int 16h: AH scan code, AL character), e.g. from a USB keyboard:
; reported as "B SS AA", and typed (CF set for Escape)
bios_key:
    push ax
    mov si, msg_bios_key
    call puts
    pop ax
    push ax
    xchg al, ah
    call put_hex8
    mov al, ' '
    call putc
    pop ax
    push ax
    call put_hex8
    call crlf
    pop ax
    ; falls through

; AL typed: a printable character is added to the line and shown, CR ends the line
; (LINE TEXT on COM1), BS erases, ESC ends the mode (CF set); anything else is ignored
type_char:
    cmp al, 0x1b
    je .escape
    cmp al, 0x0d
    je .enter
    cmp al, 0x08
    je .backspace
    cmp al, ' '
    jb .ok
    cmp al, '~'
    ja .ok
    movzx bx, byte [key_len]
    cmp bx, KEY_MAX
    jae .ok
    mov [KEY_BUF + bx], al
    inc byte [key_len]
    mov ah, 0x07
    call key_cell
    mov [es:di], ax
    pop es
.ok:
    clc
    ret
.escape:
    stc
    ret
.backspace:
    cmp byte [key_len], 0
    je .ok
    dec byte [key_len]
    movzx bx, byte [key_len]
    mov ax, 0x0720
    call key_cell
    mov [es:di], ax
    pop es
    clc
    ret
.enter:
    movzx bx, byte [key_len]
    mov byte [KEY_BUF + bx], 0
    mov si, msg_line
    call puts
    mov si, KEY_BUF
    call puts
    call crlf
    mov byte [key_len], 0
    inc byte [key_row]
    cmp byte [key_row], KEY_ROW + KEY_ROWS
    jb .ok
    mov byte [key_row], KEY_ROW
    clc
    ret

; ES:DI -> the VGA cell of column BX on row [key_row]; pushes the caller's ES (pop it)
key_cell:
    pop si                      ; the return address
    push es
    push si
    push ax
    mov ax, 0xb800
    mov es, ax
    movzx ax, byte [key_row]
    imul di, ax, 160
    shl bx, 1
    add di, bx
    pop ax
    ret

; a mouse byte in AL: a packet is reported once it has 3 bytes
mouse_byte:
    movzx bx, byte [mouse_n]
    test bx, bx
    jnz .store
    test al, 0x08               ; a packet's first byte always has bit 3 set
    jz .out
.store:
    mov [mouse_pkt + bx], al
    inc bx
    mov [mouse_n], bl
    cmp bl, 3
    jb .out
    mov byte [mouse_n], 0
    mov si, msg_mouse
    call puts
    xor bx, bx
.byte:
    mov al, [mouse_pkt + bx]
    call put_hex8
    inc bx
    cmp bx, 3
    je .end
    mov al, ' '
    call putc
    jmp .byte
.end:
    call crlf
.out:
    ret

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
keys_bios:  db 0
redraw_hz:  dw 0
pic_masks:  db 0, 0
key_len:    db 0
key_row:    db 0
key_shift:  db 0
key_e0:     db 0
mouse_n:    db 0
mouse_pkt:  db 0, 0, 0

; scan code set 1 make codes 0x00-0x39 -> US layout characters (0: none)
keymap:
    db 0, 0, "1234567890-=", 0, 0
    db "qwertyuiop[]", 0, 0
    db "asdfghjkl;'`", 0, '\'
    db "zxcvbnm,./", 0, "*", 0, " "
KEYMAP_LEN equ $ - keymap
keymap_shift:
    db 0, 0, "!@#$%^&*()_+", 0, 0
    db "QWERTYUIOP{}", 0, 0
    db 'ASDFGHJKL:"~', 0, "|"
    db "ZXCVBNM<>?", 0, "*", 0, " "
%if ($ - keymap_shift) != KEYMAP_LEN
%error "the shifted key map differs in length"
%endif

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
word_keys:      db "keys", 0
word_bios:      db "bios", 0
word_redraw:    db "redraw", 0
msg_redraw:     db "REDRAW ", 0
msg_keys_on:    db "KEYS ON", 13, 10, 0
msg_keys_off:   db "KEYS OFF", 13, 10, 0
msg_key:        db "K ", 0
msg_mouse:      db "M ", 0
msg_bios_key:   db "B ", 0
msg_line:       db "LINE ", 0
msg_gfx:        db "GFX 320x200", 13, 10, 0
msg_hline:      db "HLINE ", 0
msg_text:       db "TEXT 80x25", 13, 10, 0
msg_not_gfx:    db "ERR not in graphics mode", 13, 10, 0

%if ($ - $$) > (1 + STAGE2_SECTORS) * 512
%error "guest code does not fit in the sectors the boot sector loads"
%endif
    times (1 + STAGE2_SECTORS) * 512 - ($ - $$) db 0
