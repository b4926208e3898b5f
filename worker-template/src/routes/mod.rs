//! The routes of protocol v1 (`docs/PROTOCOL.md`), one module each; the
//! router in `lib.rs` picks one and settles its refusal.
//!
//! | Route | Module | Who may call |
//! | --- | --- | --- |
//! | `GET /v1/health` | [`health`] | anyone |
//! | `POST /v1/restore` | [`restore`] | a verified run (OIDC token) |
//! | `POST /v1/save/prepare`, `POST /v1/save/commit` | [`save`] | a verified run that may save |
//! | `PUT /v1/objects/{key}` | [`objects`] | a verified run that may save |
//! | `GET /v1/objects/{key}` | [`objects`] | the grant from a restore |
//! | `GET/POST /v1/admin/...` | [`admin`] ([`purge`]) | the admin token |

pub mod admin;
pub mod health;
pub mod objects;
pub mod purge;
pub mod restore;
pub mod save;
