"""The paywall: entitlements kept in sync from Stripe events, payment links, the runtime switch."""
