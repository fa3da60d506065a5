"""The request pipeline: per-request context, the stages (extract, precheck, verify, classify,
decide, enforce), the decisions they return and the one module that turns them into HTTP."""
