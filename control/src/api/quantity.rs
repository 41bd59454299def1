//! CPU and memory quantities as Kubernetes writes them: `250m`, `0.5`, `2`; `64Mi`, `1G`, `512`.

/// Parses a CPU quantity into millicores: `250m`, `0.5`, `2`.
pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a CPU quantity (examples: 250m, 0.5, 2)");
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let cores: f64 = s.parse().map_err(|_| bad())?;
    if !cores.is_finite() || !(0.0..=1e9).contains(&cores) {
        return Err(bad());
    }
    // Rounded up: asking for 0.0001 core must not become nothing.
    Ok((cores * 1000.0).ceil() as u64)
}

/// Parses a memory quantity into bytes: `64Mi`, `1Gi`, `500M`, `1k`, `4096`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a memory quantity (examples: 64Mi, 1Gi, 500M, 4096)");
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, mult) = UNITS
        .iter()
        .find_map(|(suffix, mult)| s.strip_suffix(suffix).map(|d| (d, *mult)))
        .unwrap_or((s, 1));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert!(parse_cpu("two").is_err());
        assert!(parse_cpu("-1").is_err());
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("12Qi").is_err());
        assert!(parse_memory("99999999999Ti").is_err());
    }
}
