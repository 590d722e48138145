//! `make-fixtures DIR`: generates the qemu-img fixtures into DIR and writes
//! `DIR/fixtures.tsv` (`name<TAB>image<TAB>raw`, paths relative to DIR), so that a browser
//! harness can serve them over HTTP.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Generates the qemu-img fixtures (images and their raw oracles) into a directory.
#[derive(Debug, Parser)]
#[command(name = "make-fixtures", version)]
struct Args {
    /// The directory to write into.
    dir: PathBuf,
}

fn main() -> ExitCode {
    let dir = Args::parse().dir;
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
