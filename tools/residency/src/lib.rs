//! Gives back the pages of a process's own program that only its start needed.
//!
//! An idle agent runs little code: a heartbeat, a consumer's poll, a timer. Its start ran a
//! great deal more (parsing the command line, connecting and authenticating, reading its
//! credentials, joining), and every page of the program that start touched stays mapped
//! into the process, along with its neighbours: a read fault maps the pages around the one
//! asked for (64 KiB by default), and newer kernels map whole large folios of the page
//! cache. Measured on a release build of `murmur`, 218 faults during the first second left
//! 18–23 MiB of the program resident, and not one more page was faulted in while idle.
//!
//! [`release_program_pages`] asks the kernel to page out the program's read-only mappings
//! (`madvise(MADV_PAGEOUT)`, Linux 5.4+). Nothing the program sees changes: a clean page of
//! a file mapping is read again from the file when next run, and a private page it wrote
//! (relocated read-only data) keeps its contents. What the idle loop runs comes back at its
//! first turn; the rest stays out until used. Pages other processes map too are left where
//! they are (the kernel skips them), so agents side by side lose nothing they share.
//!
//! Only a program that owns its process should call this: a library embedded in a bigger
//! process would page out its host's code.

use std::io;

/// What [`release_program_pages`] advised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The program's read-only mappings advised.
    pub mappings: usize,
    /// Their total length in bytes (mapped, not necessarily resident).
    pub bytes: u64,
}

/// Why the program's pages could not be given back.
#[derive(Debug, thiserror::Error)]
pub enum ResidencyError {
    /// A file under `/proc` could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `/proc/self/maps` lists none of the program's read-only mappings.
    #[error("/proc/self/maps lists no read-only mapping of the program {program}")]
    NotMapped {
        /// The program's path.
        program: String,
    },
    /// The kernel refused the advice (before Linux 5.4 it does not know `MADV_PAGEOUT`).
    #[error(
        "madvise(MADV_PAGEOUT) over {start:#x}..{end:#x}: {source} (Linux 5.4 or newer is needed)"
    )]
    Advise {
        /// Start of the mapping.
        start: usize,
        /// End of the mapping.
        end: usize,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Not on Linux: nothing is done.
    #[error("giving back program pages is done only on Linux")]
    Unsupported,
}

/// One mapping of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    readable: bool,
    path: String,
}

/// Parses one line of `/proc/PID/maps`: `start-end perms offset dev inode [path]`.
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    let (_offset, _device, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or_default().trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        writable: perms.get(1) == Some(&b'w'),
        path,
    })
}

/// The program's read-only mappings listed in `maps` (the text of `/proc/self/maps`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn program_mappings(maps: &str, program: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(parse_mapping)
        .filter(|m| m.readable && !m.writable && m.path == program && m.end > m.start)
        .collect()
}

fn program_path() -> Result<String, ResidencyError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|source| ResidencyError::Read {
        path: "/proc/self/exe",
        source,
    })?;
    Ok(exe.to_string_lossy().into_owned())
}

fn read_proc(path: &'static str) -> Result<String, ResidencyError> {
    std::fs::read_to_string(path).map_err(|source| ResidencyError::Read { path, source })
}

/// How many bytes of the program's own read-only mappings are resident now (their `Rss` in
/// `/proc/self/smaps`).
pub fn program_resident_bytes() -> Result<u64, ResidencyError> {
    if !cfg!(target_os = "linux") {
        return Err(ResidencyError::Unsupported);
    }
    let program = program_path()?;
    let smaps = read_proc("/proc/self/smaps")?;
    let mut resident_kib = 0u64;
    let mut counting = false;
    for line in smaps.lines() {
        if let Some(mapping) = parse_mapping(line).filter(|m| m.start < m.end) {
            counting = mapping.readable && !mapping.writable && mapping.path == program;
        } else if counting && let Some(rss) = line.strip_prefix("Rss:") {
            resident_kib += rss
                .split_whitespace()
                .next()
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(resident_kib * 1024)
}

/// Asks the kernel to page out every read-only mapping of the running program. Call it once
/// the program's start is over (for an agent: joined, its handlers running).
pub fn release_program_pages() -> Result<Released, ResidencyError> {
    #[cfg(target_os = "linux")]
    {
        let program = program_path()?;
        let mappings = program_mappings(&read_proc("/proc/self/maps")?, &program);
        if mappings.is_empty() {
            return Err(ResidencyError::NotMapped { program });
        }
        let mut released = Released {
            mappings: 0,
            bytes: 0,
        };
        for m in mappings {
            advise_pageout(m.start, m.end)?;
            released.mappings += 1;
            released.bytes += (m.end - m.start) as u64;
        }
        Ok(released)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(ResidencyError::Unsupported)
    }
}

#[cfg(target_os = "linux")]
fn advise_pageout(start: usize, end: usize) -> Result<(), ResidencyError> {
    // SAFETY: the range is one of this process's own read-only mappings of its program, as
    // the kernel listed it (mappings of the program are never unmapped while it runs; were
    // one gone, madvise would fail with ENOMEM and touch nothing). MADV_PAGEOUT changes no
    // contents a later access sees: a clean file page is read again from the file, a private
    // page keeps its data (swapped, or left resident where there is no swap). No Rust
    // reference or invariant depends on these pages being resident.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
    if rc == 0 {
        Ok(())
    } else {
        Err(ResidencyError::Advise {
            start,
            end,
            source: io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55e1c0a00000-55e1c13a5000 r--p 00000000 00:1b 239 /opt/murmur/bin/murmur
55e1c13a5000-55e1c3120000 r-xp 009a5000 00:1b 239 /opt/murmur/bin/murmur
55e1c3120000-55e1c3218000 r--p 02720000 00:1b 239 /opt/murmur/bin/murmur
55e1c3218000-55e1c3230000 rw-p 02818000 00:1b 239 /opt/murmur/bin/murmur
55e1c4000000-55e1c4100000 rw-p 00000000 00:00 0                          [heap]
7f1a2c000000-7f1a2c1c0000 r-xp 00028000 fe:01 1311 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a2d000000-7f1a2d001000 r-xp 00000000 fe:01 99 /opt/murmur/bin/murmur helper
7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn only_the_programs_read_only_mappings_are_chosen() {
        let chosen = program_mappings(MAPS, "/opt/murmur/bin/murmur");
        assert_eq!(
            chosen.iter().map(|m| m.start).collect::<Vec<_>>(),
            [0x55e1c0a00000, 0x55e1c13a5000, 0x55e1c3120000]
        );
        assert_eq!(chosen[1].end, 0x55e1c3120000);
        // A path with a space is kept whole, and is another file.
        let helper = program_mappings(MAPS, "/opt/murmur/bin/murmur helper");
        assert_eq!(helper.len(), 1);
        assert!(program_mappings(MAPS, "/opt/other").is_empty());
        assert_eq!(parse_mapping("not a mapping"), None);
        assert_eq!(
            parse_mapping("7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0")
                .map(|m| (m.writable, m.path)),
            Some((true, String::new()))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_programs_resident_pages_go_down_when_given_back() {
        // Run a good part of this test program's code first, so that it is resident.
        let before = program_resident_bytes().expect("smaps");
        assert!(before > 0, "nothing of the test program is resident");
        let released = release_program_pages().expect("madvise");
        assert!(released.mappings >= 2, "{released:?}");
        assert!(released.bytes >= before, "{released:?} < {before}");
        let after = program_resident_bytes().expect("smaps");
        assert!(
            after < before,
            "resident program pages did not go down: {before} → {after} bytes"
        );
    }
}
