//! The `lucid-node-management` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use lucid_node_management::config::{parse_duration, Config, RawConfig, DEFAULT_CONFIG_FILE};
use lucid_node_management::crypto::keys::{
    generate_signing_key, read_signing_key, write_key_pair, ServiceKeys, PROOF_KEY_FILE,
};
use lucid_node_management::crypto::tokens::TokenService;
use lucid_node_management::domain::revocation::MAX_TOKEN_TTL_SECONDS;
use lucid_node_management::domain::role::Role;
use lucid_node_management::store::verify;
use lucid_node_management::{logging, server, store};
use std::path::Path;

#[derive(Parser)]
#[command(
    name = "lucid-node-management",
    version,
    about = "Node pool manager of the Lucid network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by commands that read the configuration.
#[derive(clap::Args, Clone, Default)]
struct CommonArgs {
    /// State directory (database, keys, certificate). Env: DATA_DIR.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (default /etc/lucid-node-management/config.toml if present).
    #[arg(long, env = "CONFIG_FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// TCP port. Env: NODE_MANAGEMENT_PORT.
        #[arg(long)]
        port: Option<u16>,
        /// Address to bind. Env: BIND_ADDRESS. Default 0.0.0.0, or 127.0.0.1 with --http.
        #[arg(long)]
        bind: Option<String>,
        /// Serve plain HTTP (behind a TLS-terminating proxy). Env: TLS_DISABLE=true.
        /// Listens on 127.0.0.1 unless --bind / BIND_ADDRESS is given.
        #[arg(long)]
        http: bool,
    },
    /// Run the node agent: log in with the node key and send signed heartbeats.
    Agent(lucid_node_management::agent::AgentArgs),
    /// Issue tokens offline with the keys in the state directory.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write a node key pair: FILE (private, mode 0600) and FILE.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long, default_value = "node.key")]
        out: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Write a consistent copy of the database to a file. Works while the service runs (it
    /// then asks the service, through its admin API, for the copy).
    Backup {
        #[command(flatten)]
        args: lucid_node_management::cli::backup::BackupArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Replace the database with a checked backup (stop the service first). The replaced
    /// database is kept as lucid.redb.before-restore-<timestamp>.
    Restore {
        #[command(flatten)]
        args: lucid_node_management::cli::backup::RestoreArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Check a published PoOT proof file offline (FILE: one proof, an array, or a history
    /// page), or without FILE the state directory's database: audit chain, ledger,
    /// proofs, epochs, recomputation from raw heartbeats.
    Verify {
        /// A proof JSON file (`-` for standard input).
        file: Option<PathBuf>,
        /// The proof public key (base64, `proof.public_key` of GET /api/v1/keys). Default:
        /// the key in the state directory.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a signed JWT.
    Issue {
        #[arg(long)]
        role: String,
        #[arg(long)]
        subject: String,
        /// Lifetime: seconds or with a unit (30m, 12h, 7d). Default 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Revoke one token (--jti) or every token of a subject issued up to now (--subject).
    /// Goes through the service when it runs, else writes to the database.
    Revoke {
        #[command(flatten)]
        args: lucid_node_management::cli::tokens::RevokeArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
}

fn load_config(common: &CommonArgs, flags: &[(&str, String)]) -> Result<Config, String> {
    let mut raw = RawConfig::defaults();
    let file = common.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        default.exists().then_some(default)
    });
    if let Some(file) = file {
        raw.apply_toml_file(&file).map_err(|e| e.to_string())?;
    }
    raw.apply_env(std::env::vars());
    if let Some(dir) = &common.data_dir {
        raw.set("DATA_DIR", dir.display().to_string(), "flag --data-dir");
    }
    for (name, value) in flags {
        raw.set(name, value.clone(), format!("flag for {name}"));
    }
    raw.build().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            common,
            port,
            bind,
            http,
        } => serve(common, port, bind, http),
        Command::Agent(args) => lucid_node_management::agent::run(args),
        Command::Token {
            command:
                TokenCommand::Issue {
                    role,
                    subject,
                    ttl,
                    common,
                },
        } => issue_token(&common, &role, &subject, &ttl),
        Command::Token {
            command: TokenCommand::Revoke { args, common },
        } => load_config(&common, &[])
            .and_then(|config| lucid_node_management::cli::tokens::cli_revoke(args, &config)),
        Command::Keygen { out, force } => keygen(&out, force),
        Command::Verify {
            file,
            public_key,
            common,
        } => match file {
            Some(file) => verify_proof_file(&file, public_key.as_deref(), &common),
            None => verify_database(&common),
        },
        Command::Backup { args, common } => load_config(&common, &[])
            .and_then(|config| lucid_node_management::cli::backup::cli_backup(args, &config)),
        Command::Restore { args, common } => load_config(&common, &[])
            .and_then(|config| lucid_node_management::cli::backup::cli_restore(args, &config)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    common: CommonArgs,
    port: Option<u16>,
    bind: Option<String>,
    http: bool,
) -> Result<(), String> {
    let mut flags = Vec::new();
    if let Some(p) = port {
        flags.push(("NODE_MANAGEMENT_PORT", p.to_string()));
    }
    if let Some(b) = bind {
        flags.push(("BIND_ADDRESS", b));
    }
    if http {
        flags.push(("TLS_DISABLE", "true".to_string()));
    }
    let config = load_config(&common, &flags)?;
    logging::init(&config.log_level, config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(server::run(config))
}

fn issue_token(common: &CommonArgs, role: &str, subject: &str, ttl: &str) -> Result<(), String> {
    let config = load_config(common, &[])?;
    let role = match Role::parse(role) {
        Some(r @ (Role::Admin | Role::Operator)) => r,
        _ => return Err(format!("--role must be admin or operator, not {role:?}")),
    };
    if !lucid_node_management::domain::ids::is_valid_subject(subject) {
        return Err("--subject must be 1-128 characters of letters, digits and _-.@:".into());
    }
    let ttl: Duration = parse_duration(ttl).map_err(|e| format!("--ttl {ttl:?}: {e}"))?;
    // The same bound as POST /api/v1/tokens: revocation entries are kept as long as the
    // longest-lived token can verify, so no token may outlive that.
    if ttl.as_secs() > MAX_TOKEN_TTL_SECONDS {
        return Err(format!(
            "--ttl must be at most {} days",
            MAX_TOKEN_TTL_SECONDS / 86_400
        ));
    }
    let keys = ServiceKeys::load_or_create(&config.data_dir)?;
    let tokens = TokenService::new(&keys.jwt, config.jwt_secret.as_deref(), &config.jwt_issuer);
    // Microseconds, like the service's own tokens: a revocation of the subject covers
    // this token exactly when it was made after it.
    let issued = tokens.issue_at(
        role,
        subject,
        ttl,
        None,
        lucid_node_management::crypto::tokens::unix_now_us(),
    );
    println!("{}", issued.token);
    Ok(())
}

fn keygen(out: &std::path::Path, force: bool) -> Result<(), String> {
    if out.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            out.display()
        ));
    }
    let key = generate_signing_key();
    let pub_path =
        write_key_pair(out, &key).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    eprintln!(
        "wrote {} (private, 0600) and {}",
        out.display(),
        pub_path.display()
    );
    println!("{public}");
    Ok(())
}

/// The proof public key: given on the command line, or read from the state directory.
fn proof_public_key(given: Option<&str>, common: &CommonArgs) -> Result<VerifyingKey, String> {
    match given {
        Some(b64) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "--public-key is not base64".to_string())?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| "--public-key must be 32 bytes (Ed25519)".to_string())?;
            VerifyingKey::from_bytes(&bytes)
                .map_err(|_| "--public-key is not an Ed25519 key".into())
        }
        None => {
            let config = load_config(common, &[])?;
            let path = config.data_dir.join("keys").join(PROOF_KEY_FILE);
            if !path.exists() {
                return Err(format!(
                    "no --public-key given and no proof key at {}",
                    path.display()
                ));
            }
            Ok(read_signing_key(&path)?.verifying_key())
        }
    }
}

fn verify_proof_file(
    file: &Path,
    public_key: Option<&str>,
    common: &CommonArgs,
) -> Result<(), String> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    let key = proof_public_key(public_key, common)?;
    let mut proofs = verify::parse_proofs(&text)?;
    verify::verify_proofs(&mut proofs, &key)?;
    for p in &proofs {
        println!(
            "valid: {} epoch {} ({} s operational, {} heartbeats, {} USDT)",
            p.node_id, p.epoch, p.operational_seconds, p.heartbeat_count, p.credits_usdt
        );
    }
    Ok(())
}

fn verify_database(common: &CommonArgs) -> Result<(), String> {
    let config = load_config(common, &[])?;
    let key = proof_public_key(None, common)?;
    let clock = lucid_node_management::clock::Clock::new();
    let store = store::open(&config.data_dir, config.max_nodes_per_pool, &clock)?;
    let reader = store.reader().map_err(|e| e.to_string())?;
    let report = verify::verify_database(&reader, &key, |step| eprintln!("checking {step}..."))?;
    println!("{report}");
    Ok(())
}
