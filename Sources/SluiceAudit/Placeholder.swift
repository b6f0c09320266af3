// Placeholder until the audit library lands.
enum SluiceAuditPlaceholder {}
