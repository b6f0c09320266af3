// Placeholder until the policy library lands.
enum SluicePolicyPlaceholder {}
