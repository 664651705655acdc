"""Text generation's pre- and post-processing around a decoder: request parameters, token choice, log-probs,
chat templating, detokenization and stop sequences.

No model code lives here (backends run the model, the scheduler drives decoding): these modules turn a
request into prompt ids and a sampler, and token ids back into text. They need numpy only; torch is imported
lazily, when a request samples or penalizes. Each module holds one concern; import from it by name.
"""
