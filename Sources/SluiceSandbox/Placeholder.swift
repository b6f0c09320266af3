// Placeholder until the sandbox library lands.
enum SluiceSandboxPlaceholder {}
