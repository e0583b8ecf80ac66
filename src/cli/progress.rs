//! Progress bars on stderr, only on a terminal, and only for work that takes
//! more than a moment (they appear after a short delay).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before a bar appears.
const DELAY: Duration = Duration::from_millis(400);

/// A bar over `len` bytes (or a spinner when `len` is `None`), shown on
/// stderr after [`DELAY`] if stderr is a terminal; hidden otherwise.
pub fn bar(len: Option<u64>, message: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
    let style = match len {
        Some(_) => ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => ProgressStyle::with_template("{spinner} {msg} {elapsed}"),
    };
    if let Ok(style) = style {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(message.to_string());
    if std::io::stderr().is_terminal() {
        let weak = pb.downgrade();
        tokio::spawn(async move {
            tokio::time::sleep(DELAY).await;
            if let Some(pb) = weak.upgrade()
                && !pb.is_finished()
            {
                pb.set_draw_target(ProgressDrawTarget::stderr());
                pb.enable_steady_tick(Duration::from_millis(120));
            }
        });
    }
    pb
}
