#![doc = include_str!("../README.md")]

pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod metrics;
pub mod retention;
pub mod shutdown;
pub mod telemetry;
pub mod validate;
