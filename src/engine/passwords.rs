//! Passwords found only by asking: a database for which no password was found anywhere (the
//! connection string, a service, the variables, the password file) and whose server asks for
//! one gets it typed at the terminal, as `psql` and `pg_dump` ask for it. Without a terminal
//! nothing is asked, and the run meets the server's refusal as before.

use crate::catalog;
use crate::connection::Endpoint;
use crate::report::prompt;
use crate::secrets::Secret;

/// Asks for each endpoint's missing password that its server wants, once per server and user.
pub async fn ask_for_passwords(endpoints: Vec<&mut Endpoint>) {
    if !prompt::can_ask() {
        return;
    }
    let mut typed: Vec<(String, u16, String, Secret)> = Vec::new();
    for endpoint in endpoints {
        if endpoint.password.is_some() {
            continue;
        }
        let same_login = |(host, port, user, _): &&(String, u16, String, Secret)| {
            *host == endpoint.host && *port == endpoint.port && *user == endpoint.user
        };
        if let Some((.., password)) = typed.iter().find(same_login) {
            endpoint.password = Some(password.clone());
            continue;
        }
        if !catalog::asks_for_password(endpoint).await {
            continue;
        }
        let whom = endpoint.to_string();
        let Ok(Ok(Some(password))) = tokio::task::spawn_blocking(move || prompt::ask_password(&whom)).await else {
            continue;
        };
        let password = Secret::new(password);
        typed.push((
            endpoint.host.clone(),
            endpoint.port,
            endpoint.user.clone(),
            password.clone(),
        ));
        endpoint.password = Some(password);
    }
}
