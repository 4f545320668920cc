//! Integration tests, compiled as one crate. Each area has its own module; `util` builds temporary
//! model folders and runs the real binary.

mod bert;
mod calibrate;
mod cli;
mod compress;
mod contract;
mod convfactor;
mod cost;
mod demo;
mod eval;
mod export;
mod fisher;
mod importance;
mod kernels;
mod llama;
mod measure;
mod profiles;
mod recover;
mod report;
mod rounding;
mod search;
mod sensitivity;
mod setup;
mod space;
mod store;
mod tiny_gguf;
mod util;
mod worker;
