//! OTLP over mutual TLS with a custom CA, through a TLS terminator in front of the collector.

use super::*;

/// A TLS terminator in front of the collector (Python's `ssl`, ALPN `h2` and `http/1.1`,
/// client certificate required when `client_ca` is given).
const TLS_PROXY: &str = r#"
import asyncio, ssl, sys
listen, target, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2", "http/1.1"])
if len(sys.argv) > 5:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(sys.argv[5])
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass
async def handle(r, w):
    try:
        tr, tw = await asyncio.open_connection("127.0.0.1", target)
    except Exception:
        w.close()
        return
    await asyncio.gather(pipe(r, tw), pipe(tr, w))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=ctx)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"#;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// `openssl` command.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &TempDir) -> Result<Pki> {
    let p = |n: &str| dir.join(n).display().to_string();
    let openssl = |args: &[&str]| run("openssl", args).map(|_| ());
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
    a.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=retina test CA",
    ]);
    openssl(&a)?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, cert, extfile) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.pem")),
            p(&format!("{name}.ext")),
        );
        std::fs::write(&extfile, format!("basicConstraints=CA:FALSE\n{ext}"))?;
        let subject = format!("/CN=retina {name}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&a)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ])?;
    }
    // The agent runs as the unit's user (65534): its key is its own, as `LoadCredential=`
    // or an administrator's chown would make it; the other keys stay root's (0600).
    std::os::unix::fs::chown(dir.join("client.key"), Some(65534), Some(65534))?;
    Ok(Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

fn start_tls_proxy(dir: &TempDir, pki: &Pki, listen: u16, target: u16, tag: &str) -> Result<Proc> {
    let script = dir.join("tlsproxy.py");
    std::fs::write(&script, TLS_PROXY)?;
    let python = std::env::var_os("RETINA_TOOLS_VENV_BIN")
        .map(|d| PathBuf::from(d).join("python3"))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(listen.to_string())
        .arg(target.to_string())
        .arg(&pki.server_cert)
        .arg(&pki.server_key)
        .arg(&pki.ca);
    let p = Proc::spawn(tag, cmd, dir.join(&format!("{tag}.log")))?;
    wait_for_port(listen)?;
    Ok(p)
}

/// OTLP over mutual TLS through a TLS terminator in front of the collector: trusted with
/// the custom CA and the client certificate, refused (and logged with the reason) without
/// the CA.
fn otlp_over_tls(protocol: &str) -> Result<()> {
    require_root();
    let dir = TempDir::new("tls")?;
    let pki = make_pki(&dir)?;
    let (grpc, http, tls) = (free_port()?, free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let target = if protocol == "grpc" { grpc } else { http };
    let _proxy = start_tls_proxy(&dir, &pki, tls, target, "tlsproxy")?;
    let endpoint = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("https://127.0.0.1:{tls}"),
    );
    let proto = ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string());

    // Without the CA: the system trust store does not know it.
    let mut agent = start_agent(&dir, "untrusted", &[endpoint.clone(), proto.clone()])?;
    wait_for("a certificate error in the agent's log", PATIENCE, || {
        agent.proc.ensure_alive()?;
        Ok(agent.log().contains("OTLP export failed").then_some(()))
    })?;
    let log = agent.log();
    assert!(
        log.contains("UnknownIssuer") || log.contains("certificate"),
        "{log}"
    );
    agent.stop()?;

    let path = |p: &PathBuf| p.display().to_string();
    let mut agent = start_agent(
        &dir,
        "agent",
        &[
            endpoint,
            proto,
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                path(&pki.client_cert),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&pki.client_key)),
        ],
    )?;
    let ns = NetNs::new("rtls")?;
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    make_drops(&ns)?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    agent.stop()?;
    assert!(
        !agent.log().contains("OTLP export failed"),
        "{}",
        agent.log()
    );
    Ok(())
}

#[test]
fn otlp_grpc_over_mutual_tls_with_a_custom_ca() -> Result<()> {
    otlp_over_tls("grpc")
}

#[test]
fn otlp_http_over_mutual_tls_with_a_custom_ca() -> Result<()> {
    otlp_over_tls("http/protobuf")
}
