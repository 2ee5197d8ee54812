using System.Composition;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;

namespace Modular.Plugins.Netflow;

/// <summary>The "netflow" flow sink's factory. Setting: <c>capacity</c> (events kept, default 10000).</summary>
[Export(typeof(IFlowSinkFactory))]
[PluginName("netflow")]
public sealed class NetflowSinkFactory : IFlowSinkFactory
{
    public const int DefaultCapacity = 10_000;

    public string Description =>
        "Placeholder: keeps the newest flow events in a bounded in-memory ring and counts the ones it drops; does not ship them to the server or export IPFIX yet.";

    public ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var capacity = DefaultCapacity;
        if (context.Settings.TryGetValue("capacity", out var value))
        {
            capacity = value is long n && n is > 0 and <= 10_000_000
                ? (int)n
                : throw new ArgumentException($"netflow: capacity must be an integer between 1 and 10000000, got {value ?? "nothing"}");
        }

        IFlowSink sink = new MemoryFlowSink(capacity);
        return ValueTask.FromResult(sink);
    }
}
