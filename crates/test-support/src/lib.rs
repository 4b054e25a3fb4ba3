#![doc = include_str!("../README.md")]

mod app;
mod broker;
mod contracts;
mod database;
mod discovery;
mod docker;
mod eventually;
pub mod fuzz;
mod names;
pub mod shutdown;
mod topic;

pub use app::{TestApp, service_env};
pub use broker::PrivateBroker;
pub use contracts::{contract_event, contract_example, shape, shape_differences};
pub use database::TestDatabase;
pub use discovery::{kafka_bootstrap_servers, postgres_server_url};
pub use eventually::{eventually, eventually_ok};
pub use names::unique_name;
pub use topic::{Published, TopicReader};
