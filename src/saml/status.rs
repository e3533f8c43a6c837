//! SPID/CIE IdP error codes. A non-success response carries `ErrorCode nrNN` in its
//! `StatusMessage`; the user-facing codes (nr19–nr30) each get their own message, while
//! nr08–nr18 mean our request was malformed: a configuration problem on our side.

/// What the IdP said went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpError {
    /// nr19: repeated wrong credentials.
    WrongCredentials,
    /// nr20: no credentials of the requested level.
    NoCredentialsAtLevel,
    /// nr21: timeout during authentication.
    Timeout,
    /// nr22: the user denied consent.
    ConsentDenied,
    /// nr23: identity suspended or revoked, or credentials locked.
    IdentityLocked,
    /// nr25: the user cancelled.
    Cancelled,
    /// nr30: wrong identity type (e.g. a professional identity where a personal one is due).
    WrongIdentityType,
    /// nr08–nr18: our request was malformed (configuration problem, logged as such).
    RequestRejected(u8),
    /// Any other or missing code.
    Other,
}

impl IdpError {
    /// Parses `ErrorCode nr19` (any spacing or case) out of a `StatusMessage`.
    pub fn from_status_message(message: &str) -> IdpError {
        let lower = message.to_ascii_lowercase();
        let Some(pos) = lower.find("nr") else {
            return IdpError::Other;
        };
        let digits: String = lower[pos + 2..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        match digits.parse::<u8>() {
            Ok(19) => IdpError::WrongCredentials,
            Ok(20) => IdpError::NoCredentialsAtLevel,
            Ok(21) => IdpError::Timeout,
            Ok(22) => IdpError::ConsentDenied,
            Ok(23) => IdpError::IdentityLocked,
            Ok(25) => IdpError::Cancelled,
            Ok(30) => IdpError::WrongIdentityType,
            Ok(n @ 8..=18) => IdpError::RequestRejected(n),
            _ => IdpError::Other,
        }
    }

    /// The user-facing message, Italian and English.
    pub fn message(self) -> (&'static str, &'static str) {
        use IdpError::*;
        match self {
            WrongCredentials => (
                "Autenticazione non riuscita: credenziali errate inserite più volte.",
                "Login failed: wrong credentials were entered repeatedly.",
            ),
            NoCredentialsAtLevel => (
                "Non hai credenziali del livello di sicurezza richiesto da questo servizio.",
                "You have no credentials of the security level this service requires.",
            ),
            Timeout => (
                "Il tempo per completare l'accesso è scaduto. Riprova.",
                "The time to complete the login ran out. Please try again.",
            ),
            ConsentDenied => (
                "Non hai acconsentito all'invio dei dati richiesti: l'accesso non è possibile.",
                "You did not consent to sending the requested data, so you cannot log in.",
            ),
            IdentityLocked => (
                "La tua identità digitale è sospesa o revocata, o le credenziali sono bloccate. Rivolgiti al tuo gestore.",
                "Your digital identity is suspended or revoked, or your credentials are locked. Contact your provider.",
            ),
            Cancelled => ("Hai annullato l'accesso.", "You cancelled the login."),
            WrongIdentityType => (
                "Il tipo di identità usato non è accettato da questo servizio.",
                "This service does not accept the type of identity you used.",
            ),
            RequestRejected(_) | Other => (
                "Il gestore dell'identità non ha potuto completare l'accesso. Riprova più tardi.",
                "The identity provider could not complete the login. Please try again later.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_facing_code_has_its_own_message() {
        let codes = ["19", "20", "21", "22", "23", "25", "30"];
        let mut seen = std::collections::HashSet::new();
        for c in codes {
            let e = IdpError::from_status_message(&format!("ErrorCode nr{c}"));
            assert!(
                !matches!(e, IdpError::Other | IdpError::RequestRejected(_)),
                "{c}"
            );
            assert!(seen.insert(e.message().0), "nr{c} shares a message");
        }
        assert_eq!(
            IdpError::from_status_message("errorcode NR08"),
            IdpError::RequestRejected(8)
        );
        assert_eq!(IdpError::from_status_message("whatever"), IdpError::Other);
        assert_eq!(
            IdpError::from_status_message("ErrorCode nr99"),
            IdpError::Other
        );
    }
}
