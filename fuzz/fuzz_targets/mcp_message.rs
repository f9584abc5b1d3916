//! A JSON-RPC message from an MCP client, read as the MCP proxy reads it (rmcp's model,
//! then the governed call and its argument digest). Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clearance_mcp::fuzz_client_message(data);
});
