"""baton: typed, durable multi-agent pipelines.

Steps pass Pydantic contracts to each other; every run is recorded, checkpointed step by step, and resumes
from the step that failed.
"""

from baton.agents import Agent, Tool
from baton.api import (
    approve,
    arun,
    asubmit,
    await_run,
    cancel,
    get_run,
    reject,
    resume,
    resume_later,
    run,
    submit,
    wait,
    wait_chain,
)
from baton.budgets import Budget
from baton.effects import aeffect, effect
from baton.errors import (
    BatonError,
    BrokerUnavailable,
    BudgetExceeded,
    Cancelled,
    ContractViolation,
    DefinitionError,
    EffectsWouldRepeat,
    EffectUncertain,
    InvalidInput,
    MissingExtra,
    RunError,
    RunNotFound,
    RunNotQueued,
    RunNotResumable,
    StepFailed,
    StepTimeout,
    StoreUnavailable,
    TransientError,
    UserError,
)
from baton.events import emit, on, publish
from baton.patterns import Pipeline, Supervisor
from baton.pricing import register_price
from baton.providers import (
    PermanentProviderError,
    ProviderError,
    ScriptedModel,
    TransientProviderError,
    register_provider,
)
from baton.ratelimits import limit
from baton.retry import Retry, register_transient
from baton.run import Run
from baton.runtime import register_runtime
from baton.status import RunStatus, StepStatus
from baton.steps import Step, step
from baton.store import RunStore, open_store

__all__ = [
    # building blocks
    "Agent",
    "Tool",
    "Pipeline",
    "Supervisor",
    "Retry",
    "Budget",
    "Step",
    "step",
    "register_transient",
    # running
    "Run",
    "RunStatus",
    "StepStatus",
    "cancel",
    "approve",
    "reject",
    "get_run",
    "resume",
    "resume_later",
    "arun",
    "asubmit",
    "await_run",
    "run",
    "submit",
    "wait",
    "wait_chain",
    # events
    "on",
    "emit",
    "publish",
    "effect",
    "aeffect",
    # models
    "ScriptedModel",
    "limit",
    "register_price",
    "register_provider",
    # storage and runtimes
    "RunStore",
    "open_store",
    "register_runtime",
    # errors
    "BatonError",
    "Cancelled",
    "ContractViolation",
    "DefinitionError",
    "InvalidInput",
    "MissingExtra",
    "PermanentProviderError",
    "ProviderError",
    "RunError",
    "RunNotFound",
    "RunNotQueued",
    "RunNotResumable",
    "StepFailed",
    "StepTimeout",
    "BudgetExceeded",
    "StoreUnavailable",
    "BrokerUnavailable",
    "TransientError",
    "EffectUncertain",
    "EffectsWouldRepeat",
    "TransientProviderError",
    "UserError",
]

__version__ = "0.1.0"
