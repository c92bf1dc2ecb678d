//! Printing for people: tables and durations.

use aiops_sandbox::ServiceStatus;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn services_table(services: &[ServiceStatus]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "SERVICE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
        "PORT",
    ]);
    for s in services {
        table.add_row(vec![
            s.name.clone(),
            s.state.as_str().to_string(),
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.uptime_s.map(human_duration).unwrap_or_else(|| "-".into()),
            s.restarts.to_string(),
            s.health.status.as_str().to_string(),
            s.last_exit
                .as_ref()
                .map(|e| e.describe())
                .unwrap_or_else(|| "-".into()),
            s.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}
