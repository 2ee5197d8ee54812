using System.Composition;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Plugins.Netflow.Ipfix;

namespace Modular.Plugins.Netflow;

/// <summary>
/// The "netflow" flow sink's factory. Settings (<c>[plugins.netflow]</c>): <c>capacity</c> (events kept until the
/// server acknowledges them, default 10000), <c>template_refresh</c> (IPFIX templates re-sent, default "10m"); the host
/// adds <c>ipfix_collector</c> from <c>[netflow] ipfix_collector</c>.
/// </summary>
[Export(typeof(IFlowSinkFactory))]
[PluginName("netflow")]
public sealed class NetflowSinkFactory : IFlowSinkFactory
{
    public const int DefaultCapacity = NetflowSettings.DefaultCapacity;

    public string Description =>
        "Keeps flow events in a bounded in-memory store, ships them to the management server's Flow API (deleting only what it acknowledges) and, with [netflow] ipfix_collector, exports them as IPFIX over UDP.";

    public ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var settings = NetflowSettings.Parse(context.Settings);
        var logger = context.LoggerFactory.CreateLogger("Modular.Plugins.Netflow");
        var exporter = settings.IpfixCollector is { } collector
            ? new IpfixExporter(collector, settings.TemplateRefresh, settings.Capacity, context.Time, logger)
            : null;
        var sink = new NetflowSink(settings.Capacity, context.FlowUploader, exporter, ShippingOptions.Default, context.Time, logger);
        sink.Start();
        logger.LogInformation(
            "netflow: keeping up to {Capacity} flow events; {Shipping}; {Export}",
            settings.Capacity,
            sink.Ships ? "shipping them to the management server" : "no Flow API to ship them to (kept on this host)",
            exporter is null ? "no IPFIX export" : $"exporting IPFIX to {settings.IpfixCollector}");
        return ValueTask.FromResult<IFlowSink>(sink);
    }
}
