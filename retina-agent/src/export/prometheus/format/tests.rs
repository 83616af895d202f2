use super::*;

fn accept(s: &str) -> Format {
    negotiate(Some(&HeaderValue::from_str(s).unwrap()))
}

#[test]
fn openmetrics_only_when_asked_for() {
    assert_eq!(negotiate(None), Format::Text);
    assert_eq!(accept("*/*"), Format::Text);
    assert_eq!(accept("text/plain;version=0.0.4"), Format::Text);
    assert_eq!(accept("application/openmetrics-text"), Format::OpenMetrics);
    // What Prometheus 2.42 sends.
    assert_eq!(
        accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ),
        Format::OpenMetrics
    );
    assert_eq!(
        accept("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
        Format::Text
    );
    assert_eq!(accept("application/openmetrics-text;q=0"), Format::Text);
    assert_eq!(accept("Application/OpenMetrics-Text"), Format::OpenMetrics);
}

#[test]
fn counters_and_info_become_text_format_families() {
    let om = "# HELP c_bytes Bytes.\n# TYPE c_bytes counter\nc_bytes_total{a=\"1\"} 3\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 0.5\n\
                  # HELP target Target metadata.\n# TYPE target info\ntarget_info{x=\"y\"} 1\n\
                  # EOF\n";
    let mut out = String::from("stale");
    to_text(om, &mut out).unwrap();
    assert_eq!(
        out,
        "# HELP c_bytes_total Bytes.\n# TYPE c_bytes_total counter\nc_bytes_total{a=\"1\"} 3\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 0.5\n\
             # HELP target_info Target metadata.\n# TYPE target_info gauge\ntarget_info{x=\"y\"} 1\n"
    );
}
