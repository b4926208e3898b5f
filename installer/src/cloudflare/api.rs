//! The operations, one method each, with typed results.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use stateful_ci_net::reqwest::Method;

use super::{ACCOUNT, CfError, CfResult, Client, D1, NONE, Op, Part, R2, SCRIPTS};

const VERIFY: Op = Op {
    what: "verify the API token",
    permission: NONE,
};
const ACCOUNTS: Op = Op {
    what: "list accounts",
    permission: ACCOUNT,
};
const SUBDOMAIN: Op = Op {
    what: "read the account's workers.dev subdomain",
    permission: SCRIPTS,
};
const BUCKET_GET: Op = Op {
    what: "read the R2 bucket",
    permission: R2,
};
const BUCKET_CREATE: Op = Op {
    what: "create the R2 bucket",
    permission: R2,
};
const BUCKET_DELETE: Op = Op {
    what: "delete the R2 bucket",
    permission: R2,
};
const BUCKET_LIST: Op = Op {
    what: "list R2 buckets",
    permission: R2,
};
const OBJECTS_LIST: Op = Op {
    what: "list R2 objects",
    permission: R2,
};
const OBJECT_DELETE: Op = Op {
    what: "delete an R2 object",
    permission: R2,
};
const OBJECT_PUT: Op = Op {
    what: "write an R2 object",
    permission: R2,
};
const DB_LIST: Op = Op {
    what: "list D1 databases",
    permission: D1,
};
const DB_CREATE: Op = Op {
    what: "create the D1 database",
    permission: D1,
};
const DB_DELETE: Op = Op {
    what: "delete the D1 database",
    permission: D1,
};
const DB_QUERY: Op = Op {
    what: "query the D1 database",
    permission: D1,
};
const SCRIPT_LIST: Op = Op {
    what: "list Worker scripts",
    permission: SCRIPTS,
};
const SCRIPT_UPLOAD: Op = Op {
    what: "upload the Worker script",
    permission: SCRIPTS,
};
const SCRIPT_DELETE: Op = Op {
    what: "delete the Worker script",
    permission: SCRIPTS,
};
const SECRET_LIST: Op = Op {
    what: "list the Worker's secrets",
    permission: SCRIPTS,
};
const SECRET_PUT: Op = Op {
    what: "set a Worker secret",
    permission: SCRIPTS,
};
const ROUTE_GET: Op = Op {
    what: "read the Worker's workers.dev route",
    permission: SCRIPTS,
};
const SCHEDULES_GET: Op = Op {
    what: "read the Worker's Cron Triggers",
    permission: SCRIPTS,
};
const SCHEDULES_PUT: Op = Op {
    what: "set the Worker's Cron Triggers",
    permission: SCRIPTS,
};
const ROUTE_POST: Op = Op {
    what: "enable the Worker's workers.dev route",
    permission: SCRIPTS,
};

#[derive(Debug, Clone, Deserialize)]
pub struct TokenStatus {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Object {
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Database {
    pub uuid: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Script {
    pub id: String,
    #[serde(default)]
    pub migration_tag: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Secret {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueryResult {
    #[serde(default)]
    pub results: Vec<Json>,
}

#[derive(Debug, Clone, Deserialize)]
struct Enabled {
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Subdomain {
    subdomain: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Schedules {
    #[serde(default)]
    schedules: Vec<Schedule>,
}

#[derive(Debug, Clone, Deserialize)]
struct Schedule {
    cron: String,
}

/// One path segment (account, bucket, script and database names, which we
/// validate as `[a-z0-9-]`): everything else is percent-encoded.
fn seg(s: &str) -> String {
    encode(s, false)
}

/// An R2 object key in the path: `/` stays literal, as wrangler's R2 helpers
/// send it; the API does not decode `%2F`, which would name another key.
pub fn object_key_path(key: &str) -> String {
    encode(key, true)
}

fn encode(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b'/' if keep_slash => "/".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// Verify the token: user tokens at `/user/tokens/verify`, account-owned
    /// tokens (which that route refuses) at the account's endpoint.
    pub fn verify_token(&self, account: &str) -> CfResult<TokenStatus> {
        match self.get::<TokenStatus>(VERIFY, "/user/tokens/verify", &[]) {
            Ok(t) => Ok(t),
            Err(e) if e.status() == Some(401) || e.has_code(1000) => self.get(
                VERIFY,
                &format!("/accounts/{}/tokens/verify", seg(account)),
                &[],
            ),
            Err(e) => Err(e),
        }
    }

    pub fn accounts(&self) -> CfResult<Vec<Account>> {
        self.list_pages(ACCOUNTS, "/accounts", &[])
    }

    /// The account's workers.dev subdomain, `None` if it has none yet
    /// (code 10007, the code wrangler keys on: deploy-helpers
    /// `triggers/subdomain.ts`).
    pub fn workers_subdomain(&self, account: &str) -> CfResult<Option<String>> {
        match self.get::<Subdomain>(
            SUBDOMAIN,
            &format!("/accounts/{}/workers/subdomain", seg(account)),
            &[],
        ) {
            Ok(s) => Ok(Some(s.subdomain)),
            Err(e) if e.has_code(10007) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn bucket_exists(&self, account: &str, bucket: &str) -> CfResult<bool> {
        match self.get::<Json>(
            BUCKET_GET,
            &format!("/accounts/{}/r2/buckets/{}", seg(account), seg(bucket)),
            &[],
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.has_code(10006) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn buckets(&self, account: &str) -> CfResult<Vec<Bucket>> {
        self.list_cursor(
            BUCKET_LIST,
            &format!("/accounts/{}/r2/buckets", seg(account)),
            &[("per_page", self.page_size(100).to_string())],
            |v| v.get("buckets").cloned().unwrap_or(Json::Array(vec![])),
        )
    }

    /// Create a bucket; one that already exists (409/10073, e.g. an earlier
    /// attempt whose answer was lost) counts as created.
    pub fn create_bucket(&self, account: &str, bucket: &str) -> CfResult<()> {
        match self.json::<Json>(
            BUCKET_CREATE,
            Method::POST,
            &format!("/accounts/{}/r2/buckets", seg(account)),
            &json!({ "name": bucket }),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.has_code(10073) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delete a bucket; a missing one counts as deleted.
    pub fn delete_bucket(&self, account: &str, bucket: &str) -> CfResult<()> {
        match self.delete(
            BUCKET_DELETE,
            &format!("/accounts/{}/r2/buckets/{}", seg(account), seg(bucket)),
            &[],
        ) {
            Err(e) if e.has_code(10006) => Ok(()),
            other => other,
        }
    }

    /// Every object key of the bucket (pages of up to 1000).
    pub fn objects(&self, account: &str, bucket: &str) -> CfResult<Vec<Object>> {
        self.list_cursor(
            OBJECTS_LIST,
            &format!(
                "/accounts/{}/r2/buckets/{}/objects",
                seg(account),
                seg(bucket)
            ),
            &[("per_page", self.page_size(1000).to_string())],
            |v| v,
        )
    }

    /// One page of object keys (at most `per_page`, up to 1000).
    pub fn objects_page(
        &self,
        account: &str,
        bucket: &str,
        per_page: u64,
    ) -> CfResult<Vec<Object>> {
        self.get(
            OBJECTS_LIST,
            &format!(
                "/accounts/{}/r2/buckets/{}/objects",
                seg(account),
                seg(bucket)
            ),
            &[("per_page", per_page.min(1000).to_string())],
        )
    }

    /// Delete one object; a missing key counts as deleted (R2 answers
    /// success, like S3's DeleteObject; a 404/10007 is taken the same way).
    pub fn delete_object(&self, account: &str, bucket: &str, key: &str) -> CfResult<()> {
        match self.delete(
            OBJECT_DELETE,
            &format!(
                "/accounts/{}/r2/buckets/{}/objects/{}",
                seg(account),
                seg(bucket),
                object_key_path(key)
            ),
            &[],
        ) {
            Err(e) if e.status() == Some(404) && e.has_code(10007) => Ok(()),
            other => other,
        }
    }

    pub fn put_object(&self, account: &str, bucket: &str, key: &str, bytes: &[u8]) -> CfResult<()> {
        self.put_bytes(
            OBJECT_PUT,
            &format!(
                "/accounts/{}/r2/buckets/{}/objects/{}",
                seg(account),
                seg(bucket),
                object_key_path(key)
            ),
            bytes,
        )
    }

    pub fn database_by_name(&self, account: &str, name: &str) -> CfResult<Option<Database>> {
        let all: Vec<Database> = self.list_pages(
            DB_LIST,
            &format!("/accounts/{}/d1/database", seg(account)),
            &[("name", name.to_string())],
        )?;
        Ok(all.into_iter().find(|d| d.name == name))
    }

    pub fn databases(&self, account: &str) -> CfResult<Vec<Database>> {
        self.list_pages(
            DB_LIST,
            &format!("/accounts/{}/d1/database", seg(account)),
            &[],
        )
    }

    /// Create a database; if the name is taken (7502) by an earlier attempt
    /// whose answer was lost, that database is returned.
    pub fn create_database(&self, account: &str, name: &str) -> CfResult<Database> {
        match self.json::<Database>(
            DB_CREATE,
            Method::POST,
            &format!("/accounts/{}/d1/database", seg(account)),
            &json!({ "name": name }),
        ) {
            Ok(d) => Ok(d),
            Err(e) if e.has_code(7502) => match self.database_by_name(account, name)? {
                Some(d) => Ok(d),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    pub fn delete_database(&self, account: &str, id: &str) -> CfResult<()> {
        match self.delete(
            DB_DELETE,
            &format!("/accounts/{}/d1/database/{}", seg(account), seg(id)),
            &[],
        ) {
            Err(e) if e.has_code(7404) => Ok(()),
            other => other,
        }
    }

    /// Run SQL (several statements run as one batch); one result each.
    pub fn query(
        &self,
        account: &str,
        db: &str,
        sql: &str,
        params: &[&str],
    ) -> CfResult<Vec<QueryResult>> {
        let mut body = json!({ "sql": sql });
        if !params.is_empty() {
            body["params"] = json!(params);
        }
        self.json(
            DB_QUERY,
            Method::POST,
            &format!("/accounts/{}/d1/database/{}/query", seg(account), seg(db)),
            &body,
        )
    }

    pub fn script(&self, account: &str, name: &str) -> CfResult<Option<Script>> {
        let all: Vec<Script> = self.get(
            SCRIPT_LIST,
            &format!("/accounts/{}/workers/scripts", seg(account)),
            &[],
        )?;
        Ok(all.into_iter().find(|s| s.id == name))
    }

    pub fn scripts(&self, account: &str) -> CfResult<Vec<Script>> {
        self.get(
            SCRIPT_LIST,
            &format!("/accounts/{}/workers/scripts", seg(account)),
            &[],
        )
    }

    pub fn upload_script(&self, account: &str, name: &str, parts: &[Part]) -> CfResult<Json> {
        self.put_multipart(
            SCRIPT_UPLOAD,
            &format!("/accounts/{}/workers/scripts/{}", seg(account), seg(name)),
            parts,
        )
    }

    /// Delete a script (and its Durable Objects); a missing one counts as deleted.
    pub fn delete_script(&self, account: &str, name: &str) -> CfResult<()> {
        match self.delete(
            SCRIPT_DELETE,
            &format!("/accounts/{}/workers/scripts/{}", seg(account), seg(name)),
            &[("force", "true".into())],
        ) {
            Err(e) if e.has_code(10007) => Ok(()),
            other => other,
        }
    }

    pub fn secret_names(&self, account: &str, script: &str) -> CfResult<Vec<String>> {
        let all: Vec<Secret> = self.get(
            SECRET_LIST,
            &format!(
                "/accounts/{}/workers/scripts/{}/secrets",
                seg(account),
                seg(script)
            ),
            &[],
        )?;
        Ok(all.into_iter().map(|s| s.name).collect())
    }

    /// The value is sent in the body only; errors never include it.
    pub fn put_secret(&self, account: &str, script: &str, name: &str, value: &str) -> CfResult<()> {
        self.json::<Json>(
            SECRET_PUT,
            Method::PUT,
            &format!(
                "/accounts/{}/workers/scripts/{}/secrets",
                seg(account),
                seg(script)
            ),
            &json!({ "name": name, "text": value, "type": "secret_text" }),
        )?;
        Ok(())
    }

    pub fn script_route_enabled(&self, account: &str, script: &str) -> CfResult<bool> {
        let e: Enabled = self.get(
            ROUTE_GET,
            &format!(
                "/accounts/{}/workers/scripts/{}/subdomain",
                seg(account),
                seg(script)
            ),
            &[],
        )?;
        Ok(e.enabled)
    }

    /// The script's Cron Triggers (cron expressions).
    pub fn schedules(&self, account: &str, script: &str) -> CfResult<Vec<String>> {
        let s: Schedules = self.get(
            SCHEDULES_GET,
            &format!(
                "/accounts/{}/workers/scripts/{}/schedules",
                seg(account),
                seg(script)
            ),
            &[],
        )?;
        Ok(s.schedules.into_iter().map(|s| s.cron).collect())
    }

    /// Replace the script's Cron Triggers (`[]` removes them all), as
    /// wrangler's `triggers deploy` does.
    pub fn put_schedules(&self, account: &str, script: &str, crons: &[String]) -> CfResult<()> {
        let body: Vec<Json> = crons.iter().map(|c| json!({ "cron": c })).collect();
        self.json::<Json>(
            SCHEDULES_PUT,
            Method::PUT,
            &format!(
                "/accounts/{}/workers/scripts/{}/schedules",
                seg(account),
                seg(script)
            ),
            &Json::Array(body),
        )?;
        Ok(())
    }

    pub fn enable_script_route(&self, account: &str, script: &str) -> CfResult<()> {
        self.json::<Json>(
            ROUTE_POST,
            Method::POST,
            &format!(
                "/accounts/{}/workers/scripts/{}/subdomain",
                seg(account),
                seg(script)
            ),
            &json!({ "enabled": true }),
        )?;
        Ok(())
    }
}

/// Whether an error means "the SQL failed" rather than "the call failed".
pub fn is_sql_error(e: &CfError) -> bool {
    e.has_code(7500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_keep_slashes_literal() {
        assert_eq!(object_key_path("r/1/2/packs/ab"), "r/1/2/packs/ab");
        assert_eq!(object_key_path("a b%"), "a%20b%25");
        assert_eq!(seg("a/b"), "a%2Fb");
    }
}
