using Grpc.Core;
using Modular.Agent.Cli;
using Modular.Agent.Protocol;
using Modular.Agent.Status;
using Modular.Agent.Ui;
using Modular.Composition;
using Modular.Core.Status;

namespace Modular.Agent.Daemon;

/// <summary>Answers the CLI over the daemon socket. Every call reads state the daemon already holds.</summary>
internal sealed class DaemonGrpcService(
    StatusRecorder status,
    PluginCatalog catalog,
    DaemonInfo info,
    UiLogins uiLogins,
    EngineControl engine,
    IHostApplicationLifetime lifetime,
    ILogger<DaemonGrpcService> logger) : Protocol.Daemon.DaemonBase
{
    public override Task<StatusReply> Status(StatusRequest request, ServerCallContext context)
        => Task.FromResult(StatusMapping.ToReply(status.Snapshot(), request.Detail));

    public override Task<DownReply> Down(DownRequest request, ServerCallContext context)
    {
        logger.LogInformation("Stop requested by `modular down`");

        // Stop only once the reply is on its way, so the caller learns it was heard.
        context.GetHttpContext().Response.OnCompleted(() =>
        {
            lifetime.StopApplication();
            return Task.CompletedTask;
        });
        return Task.FromResult(new DownReply { Pid = Environment.ProcessId });
    }

    public override Task<UiLoginReply> UiLogin(UiLoginRequest request, ServerCallContext context)
    {
        if (uiLogins.BaseUrl is not { } ui)
        {
            throw new RpcException(new Grpc.Core.Status(StatusCode.FailedPrecondition, "the local UI is not running (see [ui] listen and the daemon's log)"));
        }

        // The token goes to this caller only; the log says that a link was issued, never the link.
        logger.LogInformation("Local UI sign-in link issued to `modular ui` (valid once, {Seconds} s)", (int)UiLogins.TokenLifetime.TotalSeconds);
        var url = $"{ui}{LocalUi.LoginPath.TrimStart('/')}?token={uiLogins.IssueToken()}";
        return Task.FromResult(new UiLoginReply { Url = url, ValidSeconds = (int)UiLogins.TokenLifetime.TotalSeconds });
    }

    public override Task<RestartEngineReply> RestartEngine(RestartEngineRequest request, ServerCallContext context)
    {
        var cancelAt = new List<Modular.Core.Engine.EngineStep>();
        foreach (var name in request.CancelAtStep.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!engine.TestHooks)
            {
                throw new RpcException(new Grpc.Core.Status(StatusCode.FailedPrecondition, $"cancelling the engine at a step is a test hook: start the daemon with {EngineControl.TestHooksVariable}=1"));
            }

            if (!Enum.TryParse<Modular.Core.Engine.EngineStep>(name, ignoreCase: true, out var step) || !Enum.IsDefined(step) || int.TryParse(name, out _))
            {
                throw new RpcException(new Grpc.Core.Status(StatusCode.InvalidArgument, $"no engine step '{name}' (one of {string.Join(", ", Enum.GetNames<Modular.Core.Engine.EngineStep>())})"));
            }

            cancelAt.Add(step);
        }

        logger.LogInformation("Engine restart requested over the daemon socket{Steps}", cancelAt.Count > 0 ? $", then cancelling the next engines at {string.Join(", ", cancelAt)}" : "");
        var (restarted, before) = engine.Restart(cancelAt);
        return Task.FromResult(new RestartEngineReply { Restarted = restarted, EngineRestarts = before });
    }

    public override Task<ListPluginsReply> ListPlugins(ListPluginsRequest request, ServerCallContext context)
        => Task.FromResult(PluginListing.ToReply(info.PluginsDir, catalog.Plugins, status.Snapshot().Peers));
}

/// <summary>Facts the daemon settled at start-up.</summary>
internal sealed record DaemonInfo(string ConfigPath, string PluginsDir, string SocketPath);
