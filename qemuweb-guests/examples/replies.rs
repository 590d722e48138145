//! What the x86 test guest answers, worked out without running it: give it the commands
//! you would type on its serial console and it prints the replies, keeping the sectors your
//! `write`s changed, as the guest's disk would. A test oracle for pages and scripts that
//! drive the guest.
//!
//! ```sh
//! cargo run -p qemuweb-guests --example replies -- 'read 100' 'write 100 AB' 'read 100' info
//! ```
//!
//! Exit status: 0, 2 for a command the guest would refuse (its `ERR` reply is printed) or
//! a sector outside the disk.

use qemuweb_guests::{
    read_reply, write_reply, x86_bios_disk, PROMPT, SECTOR_SIZE, X86_BANNER, X86_DATA_START_LBA,
    X86_DISK_SECTORS,
};
use std::process::ExitCode;

/// The guest's reply to one command line, or its `ERR` line.
fn reply(disk: &mut [u8], gfx: &mut bool, line: &str) -> Result<String, String> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let sector = |n: &str| -> Result<u64, String> {
        let lba: u64 = n.parse().map_err(|_| "ERR bad number".to_string())?;
        if lba >= X86_DISK_SECTORS {
            return Err(format!(
                "sector {lba} is outside the {X86_DISK_SECTORS}-sector disk"
            ));
        }
        Ok(lba)
    };
    let bytes = |lba: u64| lba as usize * SECTOR_SIZE..(lba as usize + 1) * SECTOR_SIZE;
    match word {
        "echo" => Ok(rest.to_string()),
        "info" => Ok(format!("DISK SECTORS {X86_DISK_SECTORS}")),
        "read" => {
            let lba = sector(rest)?;
            Ok(read_reply(lba, &disk[bytes(lba)]))
        }
        "write" => {
            let (n, fill) = rest.split_once(' ').ok_or("ERR bad number")?;
            let lba = sector(n)?;
            let byte = match fill.len() {
                2 => u8::from_str_radix(fill, 16).map_err(|_| "ERR bad number")?,
                _ => return Err("ERR bad number".into()),
            };
            if lba < X86_DATA_START_LBA {
                return Err("ERR protected sector".into());
            }
            disk[bytes(lba)].fill(byte);
            Ok(write_reply(lba, byte))
        }
        "gfx" if rest.is_empty() => {
            *gfx = true;
            Ok("GFX 320x200".into())
        }
        "text" if rest.is_empty() => {
            *gfx = false;
            Ok("TEXT 80x25".into())
        }
        "hline" => {
            let (n, fill) = rest.split_once(' ').ok_or("ERR bad number")?;
            let y: u32 = n.parse().map_err(|_| "ERR bad number")?;
            let byte = match fill.len() {
                2 => u8::from_str_radix(fill, 16).map_err(|_| "ERR bad number")?,
                _ => return Err("ERR bad number".into()),
            };
            if y >= 200 {
                return Err("ERR bad number".into());
            }
            if !*gfx {
                return Err("ERR not in graphics mode".into());
            }
            Ok(format!("HLINE {y} FILL {byte:02X}"))
        }
        "redraw" => {
            let mut args = rest.split(' ');
            let number = |a: Option<&str>, max: u32| match a.map(str::parse::<u32>) {
                Some(Ok(v)) if (1..=max).contains(&v) => Ok(v),
                _ => Err("ERR bad number".to_string()),
            };
            let n = number(args.next(), 65535)?;
            if let Some(hz) = args.next() {
                number(Some(hz), 1000)?;
            }
            if args.next().is_some() {
                return Err("ERR bad number".into());
            }
            if !*gfx {
                return Err("ERR not in graphics mode".into());
            }
            Ok(format!("REDRAW {n}"))
        }
        "gfx" | "text" => Err("ERR bad number".into()),
        _ => Err("ERR unknown command".into()),
    }
}

fn main() -> ExitCode {
    let mut disk = x86_bios_disk();
    let mut gfx = false;
    println!("{X86_BANNER}");
    for line in std::env::args().skip(1) {
        println!("{PROMPT}{line}");
        match reply(&mut disk, &mut gfx, &line) {
            Ok(r) => println!("{r}"),
            Err(e) => {
                println!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
