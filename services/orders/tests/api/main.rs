//! The service over real HTTP, with a real database and broker. One test binary: the modules
//! share `helpers` and are linked once.

mod admin;
mod catalog_products;
mod fuzz;
mod health;
mod helpers;
mod orders;
mod payment_deadline;
mod retention;
mod shutdown;
