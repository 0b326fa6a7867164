//! Several real `airlock serve` processes sharing one PostgreSQL store: a
//! fresh schema per test on the machine's PostgreSQL (127.0.0.1:5432), and
//! replicas started from one config (same policies, routes, keys and
//! tokens), each in a directory of its own so that each writes its own
//! audit trail.
//!
//! ```text
//! let set = Replicas::new(AirlockBuilder::new().policy(..).route(..)).await;
//! let TwoReplicas { mut a, b } = set.two();
//! sigkill(&mut a);
//! let c = set.start();
//! ```

use std::path::Path;
use std::process::Command;

use super::{Airlock, AirlockBuilder};

/// The test database every schema lives in.
const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A schema of its own on the test database; its URL selects it through
/// the connection's `search_path`.
pub struct PgSchema {
    pub name: String,
    /// The `store:` URL of a replica on this schema.
    pub url: String,
}

impl PgSchema {
    /// Creates an empty schema. PostgreSQL being unreachable fails the
    /// test: it is never skipped.
    pub async fn fresh() -> PgSchema {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let client = connect().await;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create the test schema");
        let url =
            format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{name}");
        PgSchema { name, url }
    }

    /// A direct connection to the schema, to look at the rows themselves.
    pub async fn client(&self) -> tokio_postgres::Client {
        let client = connect().await;
        client
            .batch_execute(&format!("SET search_path TO {}", self.name))
            .await
            .expect("select the test schema");
        client
    }

    /// How many holds are in `state`, as stored.
    pub async fn holds_in(&self, state: &str) -> i64 {
        self.client()
            .await
            .query_one("SELECT COUNT(*) FROM holds WHERE state = $1", &[&state])
            .await
            .expect("count holds")
            .get(0)
    }
}

async fn connect() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(DATABASE, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 must be reachable for the replica tests");
    tokio::spawn(conn);
    client
}

/// One config for any number of replicas on one fresh schema.
pub struct Replicas {
    pub schema: PgSchema,
    /// The config and policies every replica copies.
    template: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// Two replicas started together.
pub struct TwoReplicas {
    pub a: Airlock,
    pub b: Airlock,
}

impl Replicas {
    /// Points `builder` at a fresh schema and writes its config once.
    pub async fn new(builder: AirlockBuilder) -> Replicas {
        let schema = PgSchema::fresh().await;
        let builder = builder.store(&schema.url);
        builder.write();
        Replicas {
            schema,
            template: builder.dir,
            env: builder.env,
        }
    }

    /// Starts one more replica: the template copied to a directory of its
    /// own, `airlock serve` on port 0.
    pub fn start(&self) -> Airlock {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(self.template.path(), dir.path());
        let config = dir.path().join("airlock.yaml");
        Airlock::spawn(dir, config, &self.env, |_| {})
    }

    /// Starts two replicas, one after the other (the first applies the
    /// schema's migrations).
    pub fn two(&self) -> TwoReplicas {
        TwoReplicas {
            a: self.start(),
            b: self.start(),
        }
    }
}

/// Kills `airlock` with SIGKILL (no shutdown, no flush) and reaps it.
pub fn sigkill(airlock: &mut Airlock) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(airlock.child.id().to_string())
        .status();
    let _ = airlock.child.wait();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read the template") {
        let entry = entry.expect("template entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a template file");
        }
    }
}
