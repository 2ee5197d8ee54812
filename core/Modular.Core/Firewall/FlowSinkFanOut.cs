using Modular.Abstractions.Flows;

namespace Modular.Core.Firewall;

/// <summary>
/// Hands every flow event to each of several sinks (the <c>[netflow] sinks</c> list), in order. A sink that throws
/// is counted in <see cref="Failures"/> and the event still reaches the others: one broken third-party sink never
/// silences the built-in one. Disposing disposes every sink, each even when another one's disposal throws.
/// </summary>
public sealed class FlowSinkFanOut : IFlowSink
{
    // Immutable after construction.
    private readonly IFlowSink[] _sinks;

    // Interlocked only.
    private long _failures;

    public FlowSinkFanOut(IEnumerable<IFlowSink> sinks)
    {
        ArgumentNullException.ThrowIfNull(sinks);
        _sinks = [.. sinks];
    }

    /// <summary>Events a sink threw on (one per sink and event).</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>Thread-safe: reads only the immutable sink array.</summary>
    public void Emit(FlowEvent flowEvent)
    {
        foreach (var sink in _sinks)
        {
            try
            {
                sink.Emit(flowEvent);
            }
#pragma warning disable CA1031 // A sink's throw must not keep the event from the other sinks (IFlowSink's contract).
            catch (Exception)
#pragma warning restore CA1031
            {
                Interlocked.Increment(ref _failures);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        List<Exception>? errors = null;
        foreach (var sink in _sinks)
        {
            try
            {
                await sink.DisposeAsync();
            }
#pragma warning disable CA1031 // Every sink is disposed; the errors are reported together below.
            catch (Exception e)
#pragma warning restore CA1031
            {
                (errors ??= []).Add(e);
            }
        }

        if (errors is not null)
        {
            throw new AggregateException("disposing flow sinks failed", errors);
        }
    }
}
