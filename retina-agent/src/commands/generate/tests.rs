use super::*;

#[test]
fn writes_a_page_per_command_and_three_completions() {
    let dir = std::env::temp_dir().join(format!("retina-generate-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let written = write_all(&dir).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "man/retina-agent.1",
            "man/retina-agent-run.1",
            "man/retina-agent-snapshot.1",
            "man/retina-agent-reasons.1",
            "man/retina-agent-check.1",
            "completions/retina-agent.bash",
            "completions/_retina-agent",
            "completions/retina-agent.fish",
        ]
    );
    let main = fs::read_to_string(dir.join("man/retina-agent.1")).unwrap();
    assert!(main.contains("\n.TH retina-agent 1 "), "{main}");
    assert!(main.contains("retina\\-agent\\-run(1)"), "{main}");
    assert!(main.contains(".SH FILES"), "{main}");
    assert!(
        !main.contains(SUBCOMMAND),
        "the hidden subcommand leaked: {main}"
    );
    let run = fs::read_to_string(dir.join("man/retina-agent-run.1")).unwrap();
    assert!(run.contains("\\-\\-interval"), "{run}");
    // Options hidden from `-h` keep their text in the page.
    assert!(main.contains("Read kernel BTF from this file"), "{main}");
    let bash = fs::read_to_string(dir.join("completions/retina-agent.bash")).unwrap();
    assert!(bash.contains("snapshot") && bash.contains("--drop-map-entries"));
    assert!(!bash.contains(SUBCOMMAND));
    fs::remove_dir_all(&dir).unwrap();
}
