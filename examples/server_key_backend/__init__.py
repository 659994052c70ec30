"""A seller backend metering its users by customer id with a server key."""
