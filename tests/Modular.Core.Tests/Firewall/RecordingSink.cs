using System.Collections.Concurrent;
using Modular.Abstractions.Flows;

namespace Modular.Core.Tests.Firewall;

/// <summary>A flow sink that keeps every event it is given (thread-safe) and whether it was disposed.</summary>
internal sealed class RecordingSink : IFlowSink
{
    private readonly ConcurrentQueue<FlowEvent> _events = new();
    private int _disposals;

    public IReadOnlyList<FlowEvent> Events => [.. _events];

    /// <summary>How many times DisposeAsync was called.</summary>
    public int Disposals => Volatile.Read(ref _disposals);

    public void Emit(FlowEvent flowEvent) => _events.Enqueue(flowEvent);

    public ValueTask DisposeAsync()
    {
        Interlocked.Increment(ref _disposals);
        return ValueTask.CompletedTask;
    }
}
