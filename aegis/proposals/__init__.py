"""The evolution engine: goals the operator writes, hypotheses from the marts, ranked proposals."""
