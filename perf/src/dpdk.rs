//! What every DPDK anchor needs from the host: free hugepages (raised for
//! the run and put back afterwards), and the end of a failed run's output for the error.

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// A raised `nr_hugepages`, put back to its old value on drop.
#[derive(Debug)]
pub struct HugepageReservation {
    old: u64,
}

impl HugepageReservation {
    /// Makes sure `mb` MiB of free hugepages exist for `tool`, raising `nr_hugepages` if
    /// needed and allowed. Returns the reservation to undo, if any, and a note; an error says
    /// why DPDK must run without hugepages.
    pub fn ensure(mb: usize, tool: &str) -> Result<(Option<Self>, Option<String>), String> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let page_kb = field("Hugepagesize:").ok_or("no hugepage support in /proc/meminfo")?;
        let free = field("HugePages_Free:").unwrap_or(0);
        let need = (mb as u64 * 1024).div_ceil(page_kb);
        if free >= need {
            return Ok((None, None));
        }
        if !weir_testkit::lab::is_root() {
            return Err(format!(
                "{free} free hugepages, {need} needed, and only root may reserve more"
            ));
        }
        let old: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(format!("cannot read {NR_HUGEPAGES}"))?;
        let want = old + (need - free);
        std::fs::write(NR_HUGEPAGES, want.to_string())
            .map_err(|e| format!("cannot raise {NR_HUGEPAGES} to {want}: {e}"))?;
        let reservation = HugepageReservation { old };
        let got = std::fs::read_to_string(NR_HUGEPAGES)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(old);
        if got < want {
            // `reservation` drops here and puts the old value back.
            return Err(format!(
                "raising {NR_HUGEPAGES} from {old} to {want} gave only {got} (memory too \
                 fragmented?)"
            ));
        }
        Ok((
            Some(reservation),
            Some(format!(
                "raised {NR_HUGEPAGES} from {old} to {want} ({page_kb} kB pages) for \
                 {tool}; restored afterwards"
            )),
        ))
    }
}

impl Drop for HugepageReservation {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.old.to_string());
    }
}

/// The last `lines` lines of a tool's output, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
