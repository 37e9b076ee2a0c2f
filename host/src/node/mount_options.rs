//! TEMPORARY stub: replaced by the `mkfs` branch's per-filesystem checks.
pub fn check_values(_fs_type: &str, _options: &[String], _read_only: bool) -> Result<(), String> {
    Ok(())
}
