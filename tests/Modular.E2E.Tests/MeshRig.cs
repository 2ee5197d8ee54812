using System.Diagnostics;
using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// A server and agents as real processes in network namespaces on one bridge (a bridge in a
/// namespace of its own, a veth to each member; underlay 198.18.0.0/24). Optional: an agent behind a
/// NAT router (its own 198.19.N.0/24 inside, nftables masquerade to the bridge). Everything —
/// namespaces, processes, temp folder — goes on Dispose, even after a failure.
/// </summary>
public sealed class MeshRig : IDisposable
{
    public const string ServerIp = "198.18.0.1";
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);

    private readonly ITestOutputHelper _output;
    private readonly List<NetworkNamespace> _namespaces = [];
    private readonly Dictionary<string, Agent> _agents = new(StringComparer.Ordinal);
    private readonly NetworkNamespace _bridge;
    private int _nextHost = 2;
    private int _nextRouter;
    private Shell.BackgroundProcess? _server;

    public MeshRig(ITestOutputHelper output, string prefix)
    {
        _output = output;
        Root = Directory.CreateTempSubdirectory("modular-e2e-").FullName;
        try
        {
            _bridge = Add(NetworkNamespace.Create(prefix + "br"));
            _bridge.Exec("ip link add br0 type bridge");
            _bridge.Exec("ip link set br0 up");
            Server = Add(NetworkNamespace.Create(prefix + "srv"));
            Attach(Server, $"{ServerIp}/24");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Root { get; }

    public NetworkNamespace Server { get; }

    public string ServerConfig => Path.Combine(Root, "server.toml");

    public static string RepoRoot => BuiltBinaries.RepoRoot;

    public static string AgentBinary => BuiltBinaries.Agent;

    public static string ServerBinary => BuiltBinaries.Server;

    public static void RequirePrerequisites()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("ip");
        Prerequisites.RequireTool("nft");
        Prerequisites.RequireTool("ping");
        Prerequisites.Require(File.Exists(AgentBinary) && File.Exists(ServerBinary), $"needs the built binaries {AgentBinary} and {ServerBinary}");
    }

    public Agent this[string name] => _agents[name];

    /// <summary>Writes server.toml and starts modular-server in its namespace; waits until it listens.</summary>
    public void StartServer()
    {
        if (!File.Exists(ServerConfig))
        {
            File.WriteAllText(ServerConfig, $"""
                listen = "{ServerIp}:33073"
                data_dir = "{Path.Combine(Root, "server")}"
                relay = {"{"} listen = "{ServerIp}:33080" {"}"}
                stun = {"{"} listen = "{ServerIp}:3478" {"}"}
                """);
        }

        _server = Server.Start($"{ServerBinary} --config {ServerConfig}");
        WaitUntil(() => Server.TryExec("ss -ltn").Output.Contains($"{ServerIp}:33073", StringComparison.Ordinal), TimeSpan.FromSeconds(60), "the server listening", () => _server.Output);
    }

    /// <summary>Stops the server (SIGKILL: what a crash or host loss looks like to agents).</summary>
    public void KillServer()
    {
        _server?.Dispose();
        _server = null;
    }

    public string ServerOutput => _server?.Output ?? "";

    public Process? ServerProcess => _server?.Process;

    /// <summary>CPU seconds (user + system) a process has used so far, from /proc/&lt;pid&gt;/stat.</summary>
    public static double CpuSeconds(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture)) / 100.0;
    }

    public string CreateSetupKey() => Shell.Run(ServerBinary, $"setup-key create --reusable --config {ServerConfig}", CommandTimeout).Trim();

    public string ServerCli(string arguments) => Shell.Run(ServerBinary, $"{arguments} --config {ServerConfig}", CommandTimeout);

    /// <summary>A namespace on the bridge for an agent (not started yet).</summary>
    public Agent AddAgent(string name)
    {
        var ns = Add(NetworkNamespace.Create(name));
        var ip = $"198.18.0.{_nextHost++}";
        Attach(ns, $"{ip}/24");
        var agent = new Agent(this, name, ns, ip);
        _agents[name] = agent;
        return agent;
    }

    /// <summary>An agent behind its own NAT router (masquerade); returns the agent. Its public address is <see cref="Agent.PublicIp"/>.</summary>
    public Agent AddAgentBehindNat(string name)
    {
        var subnet = 19 + (++_nextRouter);
        var router = Add(NetworkNamespace.Create(name + "r"));
        var routerIp = $"198.18.0.{_nextHost++}";
        Attach(router, $"{routerIp}/24");
        var ns = Add(NetworkNamespace.Create(name));
        router.Link(ns, $"198.{subnet}.0.1/24", $"198.{subnet}.0.2/24");
        ns.Exec($"ip route add default via 198.{subnet}.0.1");
        router.Exec("sysctl -q -w net.ipv4.ip_forward=1");
        var rules = Path.Combine(Root, $"{name}-nat.nft");
        File.WriteAllText(rules, $$"""
            table ip mdlnat {
              chain post { type nat hook postrouting priority 100; ip saddr 198.{{subnet}}.0.0/24 oifname != "lo" masquerade; }
            }
            """);
        router.Exec($"nft -f {rules}");
        var agent = new Agent(this, name, ns, $"198.{subnet}.0.2") { PublicIp = routerIp };
        _agents[name] = agent;
        return agent;
    }

    /// <summary>
    /// A network behind an agent (for routes and exit nodes): a namespace of its own joined to the agent's by a
    /// veth pair, the agent at <paramref name="routerCidr"/>, one host at <paramref name="hostCidr"/> whose
    /// default route points at the agent, so it is reachable only through that agent. Cleaned up with the rig.
    /// </summary>
    public NetworkNamespace AddNetworkBehind(Agent router, string name, string routerCidr, string hostCidr)
    {
        ArgumentNullException.ThrowIfNull(router);
        var ns = Add(NetworkNamespace.Create(name));
        router.Namespace.Link(ns, routerCidr, hostCidr);
        ns.Exec($"ip route add default via {routerCidr[..routerCidr.IndexOf('/', StringComparison.Ordinal)]}");
        return ns;
    }

    public void WaitUntil(Func<bool> condition, TimeSpan timeout, string what, Func<string>? diagnostics = null)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < timeout)
        {
            if (condition())
            {
                return;
            }

            Thread.Sleep(500);
        }

        throw new TimeoutException($"not within {timeout.TotalSeconds} s: {what}\n{diagnostics?.Invoke()}");
    }

    public void Log(string line) => _output.WriteLine(line);

    private NetworkNamespace Add(NetworkNamespace ns)
    {
        _namespaces.Add(ns);
        return ns;
    }

    private void Attach(NetworkNamespace ns, string cidr)
    {
        var index = _namespaces.Count;
        var inside = $"e{Environment.ProcessId % 10000}n{index}";
        var port = $"b{Environment.ProcessId % 10000}n{index}";
        Shell.Run("ip", $"link add {inside} netns {ns.Name} type veth peer name {port} netns {_bridge.Name}");
        _bridge.Exec($"ip link set {port} master br0");
        _bridge.Exec($"ip link set {port} up");
        ns.Exec($"ip addr add {cidr} dev {inside}");
        ns.Exec($"ip link set {inside} up");
    }


    public void Dispose()
    {
        // Each step runs even when one before it failed: a `down` that cannot start (the agent binary removed under a
        // running test) once left the test's namespaces behind. Deleting a namespace kills what still runs in it.
        foreach (var agent in _agents.Values)
        {
            BestEffort(agent.Stop, agent.Kill);
        }

        BestEffort(KillServer);
        foreach (var ns in Enumerable.Reverse(_namespaces))
        {
            BestEffort(ns.Dispose);
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static void BestEffort(Action step, Action? instead = null)
    {
        try
        {
            step();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"MeshRig clean-up: {e.GetType().Name}: {e.Message}");
            if (instead is not null)
            {
                BestEffort(instead);
            }
        }
    }

    /// <summary>One agent: its namespace, config, socket and process.</summary>
    public sealed class Agent(MeshRig rig, string name, NetworkNamespace ns, string underlayIp)
    {
        private Shell.BackgroundProcess? _process;

        public string Name { get; } = name;

        public NetworkNamespace Namespace { get; } = ns;

        public string UnderlayIp { get; } = underlayIp;

        /// <summary>The address others see (the NAT router's, when behind one).</summary>
        public string PublicIp { get; init; } = underlayIp;

        public string Interface => $"mdl{Name}"[..Math.Min(15, 3 + Name.Length)];

        public string Socket => Path.Combine(rig.Root, $"{Name}.sock");

        public string ConfigPath => Path.Combine(rig.Root, $"{Name}.toml");

        public Process? Process => _process?.Process;

        public string Output => _process?.Output ?? "";

        /// <summary>Waits (bounded) until the agent's stdout and stderr have ended, so <see cref="Output"/> is complete after it exited.</summary>
        public bool WaitForOutputEnd(TimeSpan timeout) => _process?.WaitForOutputEnd(timeout) ?? true;

        /// <summary>Writes the agent's TOML; <paramref name="logLevel"/> is "debug" for tests, "info" for benchmarks (Debug logging costs throughput).</summary>
        /// <param name="pluginsDir">The plugins folder; default the installed agent's own.</param>
        public void WriteConfig(string setupKey, string extra = "", string? pluginsDir = null, string logLevel = "debug")
            => File.WriteAllText(ConfigPath, $"""
                management_url = "http://{ServerIp}:33073"
                setup_key = "{setupKey}"
                state_dir = "{Path.Combine(rig.Root, Name)}"
                socket = "{Socket}"
                interface = {"{"} name = "{Interface}", mode = "userspace", port = 51820 {"}"}
                plugins_dir = "{pluginsDir ?? Path.Combine(Path.GetDirectoryName(AgentBinary)!, "plugins")}"
                log = {"{"} level = "{logLevel}", file = "{Path.Combine(rig.Root, Name + ".log")}" {"}"}
                {extra}
                """);

        /// <summary>
        /// Drops UDP between this agent and <paramref name="address"/> both ways (nft table inet mdlblock in this agent's
        /// namespace), so the two can only meet through the relay; <see cref="UnblockUdp"/> lifts it.
        /// </summary>
        public void BlockUdpWith(string address)
        {
            var rules = Path.Combine(rig.Root, $"{Name}-block.nft");
            File.WriteAllText(rules, $$"""
                table inet mdlblock {
                  chain in { type filter hook input priority 0; ip saddr {{address}} meta l4proto udp drop; }
                  chain out { type filter hook output priority 0; ip daddr {{address}} meta l4proto udp drop; }
                }
                """);
            Namespace.Exec($"nft -f {rules}");
        }

        public void UnblockUdp() => Namespace.Exec("nft delete table inet mdlblock");

        public void Start(IDictionary<string, string>? environment = null)
        {
            var env = new Dictionary<string, string>(environment ?? new Dictionary<string, string>()) { ["MODULAR_HOSTNAME"] = Name };
            _process = Namespace.Start($"{AgentBinary} up --config {ConfigPath}", env);
        }

        public void Stop()
        {
            if (_process is { Process.HasExited: false })
            {
                Shell.TryRun(AgentBinary, $"down --socket {Socket}", TimeSpan.FromSeconds(20));
                _process.Process.WaitForExit(15000);
            }

            _process?.Dispose();
            _process = null;
        }

        /// <summary>SIGKILL: the agent dies without a word to anyone (what a crash or a power cut looks like to its peers).</summary>
        public void Kill()
        {
            if (_process is { Process.HasExited: false } process)
            {
                process.Process.Kill(entireProcessTree: true);
                process.Process.WaitForExit(15000);
            }

            _process?.Dispose();
            _process = null;
        }

        /// <summary>The agent's log files (Serilog rolls them daily: name plus date).</summary>
        public string Log => string.Concat(Directory.GetFiles(rig.Root, Name + "*.log").Order(StringComparer.Ordinal).Select(ReadShared));

        private static string ReadShared(string path)
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }

        /// <summary>`modular status --json`, parsed; null while the daemon does not answer.</summary>
        public JsonElement? Status()
        {
            var result = Shell.TryRun(AgentBinary, $"status --json --socket {Socket}", CommandTimeout);
            if (result.ExitCode != 0)
            {
                return null;
            }

            using var document = JsonDocument.Parse(result.Output);
            return document.RootElement.Clone();
        }

        public string? OverlayIp => Status() is { } s && s.GetProperty("ip").ValueKind == JsonValueKind.String ? s.GetProperty("ip").GetString() : null;

        public JsonElement? Peer(string peerName)
        {
            if (Status() is not { } status)
            {
                return null;
            }

            foreach (var peer in status.GetProperty("peers").EnumerateArray())
            {
                if (peer.GetProperty("name").GetString()!.StartsWith(peerName + ".", StringComparison.Ordinal) || peer.GetProperty("name").GetString() == peerName)
                {
                    return peer;
                }
            }

            return null;
        }

        /// <summary>Whether <paramref name="peerName"/> is Connected with <paramref name="type"/> (any type when null).</summary>
        public bool IsConnected(string peerName, string? type = null)
            => Peer(peerName) is { } p && p.GetProperty("state").GetString() == "Connected"
               && (type is null || p.GetProperty("connection_type").GetString() == type);

        public bool Ping(string overlayIp, int count = 3)
            => Namespace.TryExec($"ping -c {count} -i 0.3 -W 2 {overlayIp}", TimeSpan.FromSeconds(30)).ExitCode == 0; // any reply

        public string StatusText() => Shell.TryRun(AgentBinary, $"status -d --socket {Socket}", CommandTimeout).Output;

        /// <summary>Switches the written config to kernel mode (wireguard-go where there is no kernel module).</summary>
        public void UseKernelMode()
            => File.WriteAllText(ConfigPath, File.ReadAllText(ConfigPath).Replace("mode = \"userspace\"", "mode = \"kernel\"", StringComparison.Ordinal));

        /// <summary>The "firewall" object of `status --json`; null while the daemon does not answer.</summary>
        public JsonElement? Firewall() => Status() is { } s && s.TryGetProperty("firewall", out var firewall) ? firewall : null;

        /// <summary>A counter of the "firewall" status object (0 when absent or null).</summary>
        public long FirewallCounter(string name)
            => Firewall() is { } f && f.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt64() : 0;
    }
}
