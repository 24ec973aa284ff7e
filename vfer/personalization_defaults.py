"""The personalization defaults (the paper's Sec. 3.3 for CREMA-D), written once.

The node's ``adaptation`` settings (edge_node.config), the federation round's personalization
settings (:class:`vfer.messages.Personalization`), the node's
:class:`~edge_node.personalization.params.AdaptParams` and the fine-tune itself
(:func:`vfer.personalize.finetune_v`) all take their defaults from here.
"""

from __future__ import annotations

#: at most P clips per class (paper: 15 for CREMA-D, 50 for MSP-IMPROV)
P = 15
#: clips whose pseudo-label confidence (Eq. 1's largest mean probability) is below are dropped
P_THRESHOLD = 0.5
#: fine-tuning epochs
EPOCHS = 2
#: Adam learning rate
LR = 1e-3
#: below this many selected clips the node does not adapt
MIN_CLIPS = 4
#: the fine-tune's mini-batch size
BATCH_SIZE = 8
#: class-balanced selection (not the paper's): after the top P per class, no class keeps more than
#: this times the smallest kept class; 0 is the paper's rule. The node's default because it beat
#: the paper's rule on every seed measured (docs/personalization.md, "Which head will hurt a person")
BALANCE = 2.0
