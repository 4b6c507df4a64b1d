//! `autosnap completions SHELL` and `autosnap man`, generated from the same
//! clap definitions as `--help`.

use crate::cli::{CompletionsArgs, ManArgs};
use crate::exit::Exit;

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = crate::cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "autosnap", &mut buf);
    crate::output::print(&String::from_utf8_lossy(&buf));
    Ok(Exit::Success)
}

pub fn man(args: &ManArgs) -> anyhow::Result<Exit> {
    let cmd = crate::cli::command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cmd, dir)?;
            eprintln!("wrote man pages to {}", dir.display());
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            crate::output::print(&String::from_utf8_lossy(&buf));
        }
    }
    Ok(Exit::Success)
}
