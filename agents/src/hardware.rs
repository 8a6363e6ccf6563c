//! What this machine offers, as an agent announces it in its manifest: logical cores,
//! memory, the CPU features inference kernels use, and GPUs with their memory where the
//! system says so (NVIDIA through `nvidia-smi`, AMD through the kernel's `amdgpu` sysfs
//! files). What cannot be detected the operator declares ([`Declared`]).
//!
//! The parsers are pure and tested on captured text; [`detect`] reads the files.

use std::path::Path;

use murmur_subjects::events::Hardware;

/// CPU features announced when present: the ones candle's and llama.cpp's CPU kernels
/// choose between.
pub const ANNOUNCED_CPU_FEATURES: [&str; 9] = [
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vnni",
    "asimd",
    "sve",
];

/// What the operator declares about the machine, over what is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Accelerators (GPU model names) instead of the detected ones.
    pub accelerators: Vec<String>,
    /// Accelerator memory in MiB instead of the detected sum.
    pub vram_mib: Option<u64>,
}

/// One GPU as the system reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// Model name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// This machine's hardware, with `declared` taking the place of what it names.
pub fn detect(declared: &Declared) -> Hardware {
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| memory_mib(&m))
        .unwrap_or(0);
    let cpu_features = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| cpu_features(&c))
        .unwrap_or_default();
    let gpus = nvidia_gpus()
        .into_iter()
        .chain(amd_gpus(Path::new("/sys/class/drm")))
        .collect::<Vec<_>>();
    let mut hardware = Hardware {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_mib,
        accelerators: gpus.iter().map(|g| g.name.clone()).collect(),
        vram_mib: gpus.iter().map(|g| g.memory_mib).sum(),
        cpu_features,
    };
    if !declared.accelerators.is_empty() {
        hardware.accelerators = declared.accelerators.clone();
    }
    if let Some(vram) = declared.vram_mib {
        hardware.vram_mib = vram;
    }
    hardware
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
pub fn memory_mib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

/// The [`ANNOUNCED_CPU_FEATURES`] the first processor of `/proc/cpuinfo` lists (`flags` on
/// x86, `Features` on Arm), in that order.
pub fn cpu_features(cpuinfo: &str) -> Vec<String> {
    let listed: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key.trim(), "flags" | "Features").then_some(value)
        })
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    ANNOUNCED_CPU_FEATURES
        .iter()
        .filter(|f| listed.contains(f))
        .map(|f| f.to_string())
        .collect()
}

/// GPUs from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(csv: &str) -> Vec<Gpu> {
    csv.lines()
        .filter_map(|line| {
            let (name, memory) = line.rsplit_once(',')?;
            Some(Gpu {
                name: name.trim().to_string(),
                memory_mib: memory.trim().parse().ok()?,
            })
        })
        .filter(|g| !g.name.is_empty())
        .collect()
}

fn nvidia_gpus() -> Vec<Gpu> {
    // Only where the driver is loaded: no process is started on machines without one.
    if !Path::new("/proc/driver/nvidia/gpus").exists() {
        return Vec::new();
    }
    std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// AMD GPUs under a `/sys/class/drm`-shaped directory: each `card<N>/device` whose `vendor`
/// is AMD's (0x1002) and which reports `mem_info_vram_total` (bytes). The name is the
/// `product_name` where the driver gives one.
pub fn amd_gpus(drm: &Path) -> Vec<Gpu> {
    let Ok(entries) = std::fs::read_dir(drm) else {
        return Vec::new();
    };
    let mut cards: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("card"))
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    cards.sort();
    let read = |p: &Path| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    cards
        .iter()
        .filter_map(|card| {
            let device = card.join("device");
            if read(&device.join("vendor")).ok()? != "0x1002" {
                return None;
            }
            let bytes: u64 = read(&device.join("mem_info_vram_total"))
                .ok()?
                .parse()
                .ok()?;
            let name = read(&device.join("product_name"))
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "AMD GPU".to_string());
            Some(Gpu {
                name,
                memory_mib: bytes / (1024 * 1024),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        let meminfo = "MemTotal:       24567890 kB\nMemFree:        1234 kB\n";
        assert_eq!(memory_mib(meminfo), Some(23992));
        assert_eq!(memory_mib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn cpu_features_are_the_announced_ones_the_first_processor_lists() {
        let x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c bmi2\nprocessor\t: 1\nflags\t\t: fpu\n";
        assert_eq!(cpu_features(x86), ["avx", "avx2", "fma", "f16c"]);
        let arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n";
        assert_eq!(cpu_features(arm), ["asimd"]);
        assert!(cpu_features("").is_empty());
    }

    #[test]
    fn nvidia_smi_lines_give_name_and_memory() {
        let csv = "NVIDIA H200, 143771\nNVIDIA GeForce RTX 4090, 24564\ngarbage\n";
        assert_eq!(
            parse_nvidia_smi(csv),
            [
                Gpu {
                    name: "NVIDIA H200".into(),
                    memory_mib: 143771
                },
                Gpu {
                    name: "NVIDIA GeForce RTX 4090".into(),
                    memory_mib: 24564
                }
            ]
        );
    }

    #[test]
    fn amd_cards_are_read_from_sysfs_and_others_skipped() {
        let drm = tempfile::tempdir().expect("tempdir");
        let card = |n: &str, vendor: &str, vram: Option<&str>, name: Option<&str>| {
            let device = drm.path().join(n).join("device");
            std::fs::create_dir_all(&device).expect("mkdir");
            std::fs::write(device.join("vendor"), format!("{vendor}\n")).expect("write");
            if let Some(v) = vram {
                std::fs::write(device.join("mem_info_vram_total"), v).expect("write");
            }
            if let Some(n) = name {
                std::fs::write(device.join("product_name"), n).expect("write");
            }
        };
        card(
            "card1",
            "0x1002",
            Some("17163091968\n"),
            Some("AMD Radeon RX 7900 GRE"),
        );
        card("card0", "0x8086", Some("1073741824"), None);
        card("card2", "0x1002", Some("4294967296"), None);
        card("card2-DP-1", "0x1002", Some("1"), None);
        assert_eq!(
            amd_gpus(drm.path()),
            [
                Gpu {
                    name: "AMD Radeon RX 7900 GRE".into(),
                    memory_mib: 16368
                },
                Gpu {
                    name: "AMD GPU".into(),
                    memory_mib: 4096
                }
            ]
        );
        assert!(amd_gpus(&drm.path().join("absent")).is_empty());
    }

    #[test]
    fn declared_accelerators_and_memory_replace_the_detected() {
        let declared = Declared {
            accelerators: vec!["NVIDIA H200".into()],
            vram_mib: Some(143_771),
        };
        let hardware = detect(&declared);
        assert_eq!(hardware.accelerators, ["NVIDIA H200"]);
        assert_eq!(hardware.vram_mib, 143_771);
        assert!(hardware.cores >= 1);
        assert!(hardware.memory_mib > 0, "this machine's /proc/meminfo");
    }
}
