"""The AutonomousChangeSet lifecycle: state machine, journal, simulation gate, rollback artifacts."""
