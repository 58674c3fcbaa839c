"""Healing: alerts become incidents, incidents are diagnosed and healed by playbooks (data in
``policies/playbooks.json``), every action judged by the policy engine, verified on the SLIs,
escalated when nothing works, and recorded in the signed ledger. See docs/healing.md."""
