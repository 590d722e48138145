//! `make-fixtures DIR`: generates the qemu-img fixtures into DIR and writes
//! `DIR/fixtures.tsv` (`name<TAB>image<TAB>raw`, paths relative to DIR), so that a browser
//! harness can serve them over HTTP.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: make-fixtures DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let result = qemuweb_testkit::fixtures::generate(&dir)
        .and_then(|f| qemuweb_testkit::fixtures::write_tsv(&dir, &f).map(|()| f));
    match result {
        Ok(fixtures) => {
            for f in &fixtures {
                println!("{}\t{}", f.name, f.description);
            }
            eprintln!("{} fixtures in {}", fixtures.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("make-fixtures: {e}");
            ExitCode::FAILURE
        }
    }
}
