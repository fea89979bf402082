//! Progress lines of long benchmarks ("policy: 10k rules", "forward round 2/5: kernel").
//!
//! They go to stderr, so that `--json` output on stdout stays one clean object. `weir-bench
//! all` draws a progress bar on stderr; a line printed under it would tear the bar, so while
//! the bar is up it takes the lines over with [`set_sink`] and shows each as the bar's
//! message.

use std::sync::{Mutex, PoisonError};

/// Where progress lines go instead of stderr.
pub type Sink = Box<dyn Fn(&str) + Send>;

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Reports what a benchmark is doing now: to the installed sink, else as one line on
/// stderr.
pub fn step(what: &str) {
    let sink = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    match sink.as_ref() {
        Some(show) => show(what),
        None => eprintln!("weir-bench: {what} ..."),
    }
}

/// Sends progress lines to `sink` (`None`: back to stderr); returns the sink it replaces.
pub fn set_sink(sink: Option<Sink>) -> Option<Sink> {
    let mut current = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    std::mem::replace(&mut *current, sink)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn an_installed_sink_receives_the_steps_until_it_is_removed() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let into = Arc::clone(&seen);
        let before = set_sink(Some(Box::new(move |what| {
            into.lock().unwrap().push(what.to_string());
        })));
        step("progress test: first");
        step("progress test: second");
        let replaced = set_sink(before);
        assert!(
            replaced.is_some(),
            "set_sink hands back the sink it replaces"
        );
        step("progress test: after removal");
        // Other tests may report steps meanwhile: look only at this test's own.
        let seen = seen.lock().unwrap();
        let ours: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .filter(|s| s.starts_with("progress test:"))
            .collect();
        assert_eq!(ours, ["progress test: first", "progress test: second"]);
    }
}
