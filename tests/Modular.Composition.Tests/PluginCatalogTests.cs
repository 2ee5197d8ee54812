using Modular.Abstractions.Flows;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Testing;

namespace Modular.Composition.Tests;

public sealed class PluginCatalogTests : IDisposable
{
    private readonly List<string> _dirs = [];
    private readonly ListLogger _logger = new();

    public void Dispose()
    {
        foreach (var dir in _dirs)
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private string PluginsDir(bool builtIns, params string[] fixtures)
    {
        var dir = PluginFixtures.CreatePluginsDir(fixtures);
        _dirs.Add(dir);
        if (builtIns)
        {
            PluginFixtures.CopyBuiltInPlugins(dir);
        }

        return dir;
    }

    [Fact]
    public void The_five_built_in_plugins_load_and_are_found_by_name()
    {
        using var catalog = PluginCatalog.Load(PluginsDir(builtIns: true), _logger);

        Assert.Equal(["bind", "ebpf", "udp"], catalog.NamesOf<IProxyFactory>().Order());
        Assert.Equal(["rosenpass"], catalog.NamesOf<IPresharedKeyProviderFactory>());
        Assert.Equal(["netflow"], catalog.NamesOf<IFlowSinkFactory>());
        Assert.All(catalog.Plugins, p =>
        {
            Assert.True(p.Loaded, p.Error);
            Assert.Null(p.Error);
            Assert.False(string.IsNullOrWhiteSpace(p.Description));
            Assert.StartsWith("0.1.0", p.Version, StringComparison.Ordinal);
            Assert.True(File.Exists(p.AssemblyPath), p.AssemblyPath);
        });
        Assert.Equal("proxy", catalog.Plugins.Single(p => p.Name == "udp").Kind);
        Assert.Equal("psk", catalog.Plugins.Single(p => p.Name == "rosenpass").Kind);
        Assert.Equal("flow-sink", catalog.Plugins.Single(p => p.Name == "netflow").Kind);
        Assert.Empty(_logger.Warnings);

        // The factories work through the shared contract types.
        Assert.True(catalog.Get<IProxyFactory>("udp").CanProxy(new FakeWgInterfaceView(WgInterfaceMode.Kernel), new ProxyEnvironment(false, false)).CanProxy);
        Assert.False(catalog.Get<IProxyFactory>("bind").CanProxy(new FakeWgInterfaceView(WgInterfaceMode.Kernel), new ProxyEnvironment(false, true)).CanProxy);
        Assert.Equal(["bind", "ebpf", "udp"], catalog.All<IProxyFactory>().Select(f => f.Name).Order());
        Assert.Equal("Modular.Plugins.ProxyUdp.UdpProxyFactory", catalog.Get<IProxyFactory>("udp").GetType().FullName);
    }

    [Fact]
    public async Task A_proxy_created_through_the_catalog_moves_datagrams()
    {
        using var catalog = PluginCatalog.Load(PluginsDir(builtIns: true), _logger);
        using var wireGuard = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
        wireGuard.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        var iface = new FakeWgInterfaceView(WgInterfaceMode.Kernel, ((System.Net.IPEndPoint)wireGuard.LocalEndPoint!).Port);

        // The plugin lives in its own load context; logging and contract types cross from the host.
        await using var proxy = await catalog.Get<IProxyFactory>("udp").CreateAsync(iface, new FakePluginContext(), CancellationToken.None);
        var relay = new InMemoryRelayedConnection();
        await proxy.AddRelayedConnAsync(relay, default, CancellationToken.None);
        proxy.Work();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(1, 2, 3));

        var buffer = new byte[64];
        var result = await wireGuard.ReceiveFromAsync(buffer, System.Net.Sockets.SocketFlags.None, new System.Net.IPEndPoint(System.Net.IPAddress.Any, 0), Bounded.Wait);
        Assert.Equal(WgFrames.Transport(1, 2, 3), buffer[..result.ReceivedBytes]);
        Assert.Equal(proxy.EndpointAddr, result.RemoteEndPoint);
    }

    [Fact]
    public void A_third_party_plugin_dropped_in_the_folder_is_selectable()
    {
        using var catalog = PluginCatalog.Load(PluginsDir(builtIns: true, "ThirdPartyProxy"), _logger);

        var factory = catalog.Get<IProxyFactory>("thirdparty");
        Assert.Equal("Third-party test proxy (fixture)", factory.Description);
        Assert.Contains("thirdparty", catalog.NamesOf<IProxyFactory>());
        var info = catalog.Plugins.Single(p => p.Name == "thirdparty");
        Assert.True(info.Loaded);
        Assert.EndsWith(Path.Combine("ThirdPartyProxy", "ThirdPartyProxy.dll"), info.AssemblyPath, StringComparison.Ordinal);
    }

    [Fact]
    public void A_plugin_built_against_a_newer_major_contract_is_refused_with_the_reason_and_a_current_one_loads()
    {
        var dir = PluginsDir(builtIns: false, "ThirdPartyProxy");
        var current = PluginContractVersion.Current;
        Assert.Equal(new Version(1, 1, 0), current);
        Assert.Equal(current.Major, PluginAssemblyLocatorProbe(Path.Combine(dir, "ThirdPartyProxy", "ThirdPartyProxy.dll")).Major);

        // The same plugin, its reference rewritten as if built against contract 2.0, against 0.0 (too old) and
        // against 1.2 (a newer minor).
        foreach (var (folder, version) in new[] { ("future", new Version(2, 0, 0, 0)), ("ancient", new Version(0, 0, 1, 0)), ("newerminor", new Version(1, 2, 0, 0)) })
        {
            var copy = Directory.CreateDirectory(Path.Combine(dir, folder)).FullName;
            var dll = Path.Combine(copy, folder + ".dll");
            File.Copy(Path.Combine(dir, "ThirdPartyProxy", "ThirdPartyProxy.dll"), dll);
            PluginFixtures.SetContractReference(dll, version);
        }

        using var catalog = PluginCatalog.Load(dir, _logger);

        Assert.True(catalog.Plugins.Single(p => p.Name == "thirdparty").Loaded);
        Assert.NotNull(catalog.Get<IProxyFactory>("thirdparty"));

        var future = catalog.Plugins.Single(p => p.Name == "future");
        Assert.False(future.Loaded);
        Assert.Contains("built against plugin contract 2.0.0, a newer major version than this agent's 1.1.0", future.Error, StringComparison.Ordinal);
        var ancient = catalog.Plugins.Single(p => p.Name == "ancient");
        Assert.False(ancient.Loaded);
        Assert.Contains("older than the oldest this agent supports (0.1.0)", ancient.Error, StringComparison.Ordinal);
        var newerMinor = catalog.Plugins.Single(p => p.Name == "newerminor");
        Assert.False(newerMinor.Loaded);
        Assert.Contains("built against plugin contract 1.2.0, newer than this agent's 1.1.0", newerMinor.Error, StringComparison.Ordinal);

        // The reason is in the log too, with the plugin's name.
        Assert.Contains(_logger.Warnings, w => w.Contains("future", StringComparison.Ordinal) && w.Contains("newer major version", StringComparison.Ordinal));
    }

    [Fact]
    public void A_plugin_built_against_contract_1_0_before_the_flow_services_still_loads_and_runs()
    {
        // Contract 1.1 added members (IFlowUploader and the flow sink status); a 1.0 plugin's reference is older.
        var dir = PluginsDir(builtIns: false, "ThirdPartyProxy");
        var dll = Path.Combine(dir, "ThirdPartyProxy", "ThirdPartyProxy.dll");
        PluginFixtures.SetContractReference(dll, new Version(1, 0, 0, 0));
        Assert.Equal(new Version(1, 0, 0, 0), PluginAssemblyLocatorProbe(dll));

        using var catalog = PluginCatalog.Load(dir, _logger);

        var info = catalog.Plugins.Single(p => p.Name == "thirdparty");
        Assert.True(info.Loaded, info.Error);
        Assert.Equal("Third-party test proxy (fixture)", catalog.Get<IProxyFactory>("thirdparty").Description);
        Assert.DoesNotContain(_logger.Warnings, w => w.Contains("contract", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_third_party_flow_sink_built_outside_the_solution_loads_by_name_and_receives_events()
    {
        var dir = PluginsDir(builtIns: false, "ThirdPartyFlowSink");
        var file = Path.Combine(dir, "flows.txt");
        using var catalog = PluginCatalog.Load(dir, _logger);

        var info = catalog.Plugins.Single(p => p.Name == "thirdpartysink");
        Assert.True(info.Loaded, info.Error);
        Assert.Equal("flow-sink", info.Kind);
        var sink = await catalog.Get<Modular.Abstractions.Flows.IFlowSinkFactory>("thirdpartysink")
            .CreateAsync(new FakePluginContext(new Dictionary<string, object?> { ["path"] = file }), CancellationToken.None);
        sink.Emit(new Modular.Abstractions.Flows.FlowEvent(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UnixEpoch, Modular.Abstractions.Flows.FlowEventType.Start,
            Modular.Abstractions.Flows.FlowDirection.Ingress, 6, System.Net.IPAddress.Parse("100.64.0.2"), 40000, System.Net.IPAddress.Parse("100.64.0.1"), 80, 0, 0, 3, 180, 2, 120, "web", null, null));
        await sink.DisposeAsync();

        Assert.Equal(["start 6 100.64.0.2 40000 100.64.0.1 80 rx=180 tx=120 rule=web"], File.ReadAllLines(file));
    }

    [Theory]
    [InlineData("1.0.0", null)]
    [InlineData("0.1.0", null)]
    [InlineData("1.1.0", "newer than this agent's 1.0.0")]
    [InlineData("2.0.0", "a newer major version")]
    [InlineData("0.0.9", "older than the oldest")]
    public void The_contract_rule_accepts_the_supported_range_only(string builtAgainst, string? refusal)
    {
        var reason = PluginContractVersion.Check(Version.Parse(builtAgainst), new Version(1, 0, 0), new Version(0, 1, 0));
        if (refusal is null)
        {
            Assert.Null(reason);
        }
        else
        {
            Assert.Contains(refusal, reason, StringComparison.Ordinal);
        }
    }

    private static Version PluginAssemblyLocatorProbe(string dll)
    {
        using var stream = File.OpenRead(dll);
        using var pe = new System.Reflection.PortableExecutable.PEReader(stream);
        var reader = System.Reflection.Metadata.PEReaderExtensions.GetMetadataReader(pe);
        return reader.AssemblyReferences.Select(reader.GetAssemblyReference).Single(r => reader.GetString(r.Name) == "Modular.Abstractions").Version;
    }

    [Fact]
    public void A_plugin_shipping_its_own_System_Composition_still_has_its_export_found()
    {
        var dir = PluginsDir(builtIns: false, "OwnCompositionProxy");
        Assert.True(File.Exists(Path.Combine(dir, "OwnCompositionProxy", "System.Composition.AttributedModel.dll")), "the fixture must ship its own System.Composition");

        using var catalog = PluginCatalog.Load(dir, _logger);

        var factory = catalog.Get<IProxyFactory>("owncomp");
        Assert.Equal("Proxy fixture that ships its own System.Composition", factory.Description);

        // Built against contract 0.x (it implements only the obsolete IWgIface members): the host's call through
        // the narrow view still reaches it, because the host hands over its whole interface.
        IWgInterfaceView iface = new FakeWgIface(WgInterfaceMode.Kernel);
        Assert.Equal(ProxyCapability.No("fixture only"), factory.CanProxy(iface, new ProxyEnvironment(false, false)));
    }

    [Fact]
    public void Broken_plugins_are_reported_with_reasons_and_the_others_still_load()
    {
        var dir = PluginsDir(builtIns: false, "ThirdPartyProxy", "ThrowingProxy");
        var corrupt = Directory.CreateDirectory(Path.Combine(dir, "corrupt")).FullName;
        var random = new byte[4096];
        new Random(42).NextBytes(random);
        File.WriteAllBytes(Path.Combine(corrupt, "corrupt.dll"), random);
        var junk = Directory.CreateDirectory(Path.Combine(dir, "junk")).FullName;
        File.WriteAllBytes(Path.Combine(junk, "X.dll"), random);
        Directory.CreateDirectory(Path.Combine(dir, "empty"));

        using var catalog = PluginCatalog.Load(dir, _logger);

        Assert.NotNull(catalog.Get<IProxyFactory>("thirdparty"));

        var throwing = catalog.Plugins.Single(p => p.Name == "throwing");
        Assert.False(throwing.Loaded);
        Assert.Equal("proxy", throwing.Kind);
        Assert.Contains("refuses to start", throwing.Error, StringComparison.Ordinal);
        Assert.Contains("InvalidOperationException", throwing.Error, StringComparison.Ordinal);

        var corruptInfo = catalog.Plugins.Single(p => p.Name == "corrupt");
        Assert.False(corruptInfo.Loaded);
        Assert.Equal(PluginCatalog.UnknownKind, corruptInfo.Kind);
        Assert.Equal(Path.Combine(corrupt, "corrupt.dll"), corruptInfo.AssemblyPath);
        Assert.Contains("BadImageFormatException", corruptInfo.Error, StringComparison.Ordinal);

        var junkInfo = catalog.Plugins.Single(p => p.Name == "junk");
        Assert.False(junkInfo.Loaded);
        Assert.Contains("X.dll: not a valid .NET assembly", junkInfo.Error, StringComparison.Ordinal);

        var emptyInfo = catalog.Plugins.Single(p => p.Name == "empty");
        Assert.False(emptyInfo.Loaded);
        Assert.Contains("no .dll", emptyInfo.Error, StringComparison.Ordinal);

        // Each failure is warned about exactly once, naming plugin, path and reason.
        foreach (var failed in new[] { throwing, corruptInfo, junkInfo, emptyInfo })
        {
            var warning = Assert.Single(_logger.Warnings, w => w.Contains($"Plugin {failed.Name} ", StringComparison.Ordinal));
            Assert.Contains(failed.AssemblyPath, warning, StringComparison.Ordinal);
            Assert.Contains(failed.Error!, warning, StringComparison.Ordinal);
        }

        Assert.Equal(4, _logger.Warnings.Count);
    }

    [Fact]
    public void Getting_a_plugin_that_failed_throws_with_its_path_and_reason()
    {
        using var catalog = PluginCatalog.Load(PluginsDir(builtIns: false, "ThrowingProxy"), _logger);

        var ex = Assert.Throws<PluginLoadException>(() => catalog.Get<IProxyFactory>("throwing"));
        Assert.Contains("'throwing'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(Path.Combine("ThrowingProxy", "ThrowingProxy.dll"), ex.Message, StringComparison.Ordinal);
        Assert.Contains("refuses to start", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unknown_name_lists_the_available_ones()
    {
        using var catalog = PluginCatalog.Load(PluginsDir(builtIns: true), _logger);

        var ex = Assert.Throws<PluginLoadException>(() => catalog.Get<IProxyFactory>("quic"));
        Assert.Contains("no proxy plugin named 'quic'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("available: ", ex.Message, StringComparison.Ordinal);
        foreach (var name in new[] { "udp", "bind", "ebpf" })
        {
            Assert.Contains(name, ex.Message, StringComparison.Ordinal);
        }

        var wrongKind = Assert.Throws<PluginLoadException>(() => catalog.Get<IFlowSinkFactory>("udp"));
        Assert.Contains("is a proxy plugin, not a flow-sink plugin", wrongKind.Message, StringComparison.Ordinal);
        Assert.Contains("netflow", wrongKind.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_second_plugin_with_a_taken_name_is_reported_as_a_duplicate()
    {
        var dir = PluginsDir(builtIns: false);
        var source = PluginFixtures.Build("ThirdPartyProxy");
        foreach (var folder in new[] { "a-first", "b-second" })
        {
            var target = Directory.CreateDirectory(Path.Combine(dir, folder)).FullName;
            foreach (var file in Directory.GetFiles(source))
            {
                File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
            }
        }

        using var catalog = PluginCatalog.Load(dir, _logger);

        var entries = catalog.Plugins.Where(p => p.Name == "thirdparty").ToList();
        Assert.Equal(2, entries.Count);
        Assert.True(entries[0].Loaded);
        Assert.Contains("a-first", entries[0].AssemblyPath, StringComparison.Ordinal);
        Assert.False(entries[1].Loaded);
        Assert.Contains("duplicate proxy plugin name 'thirdparty'", entries[1].Error, StringComparison.Ordinal);
        Assert.Contains(entries[0].AssemblyPath, entries[1].Error, StringComparison.Ordinal);
        Assert.NotNull(catalog.Get<IProxyFactory>("thirdparty"));
        Assert.Single(_logger.Warnings);
    }

    [Fact]
    public void An_export_without_a_plugin_name_is_reported_not_lost()
    {
        using var catalog = PluginCatalog.Load(PluginsDir(builtIns: false, "UnnamedProxy", "ThirdPartyProxy"), _logger);

        var unnamed = catalog.Plugins.Single(p => p.AssemblyPath.EndsWith("UnnamedProxy.dll", StringComparison.Ordinal));
        Assert.False(unnamed.Loaded);
        Assert.Equal("UnnamedProxy", unnamed.Name);
        Assert.Contains("[PluginName", unnamed.Error, StringComparison.Ordinal);
        Assert.Equal(["thirdparty"], catalog.NamesOf<IProxyFactory>());
    }

    [Fact]
    public void A_missing_plugins_folder_gives_an_empty_catalog_and_a_warning()
    {
        using var catalog = PluginCatalog.Load(Path.Combine(Path.GetTempPath(), $"modular-none-{Guid.NewGuid():N}"), _logger);
        Assert.Empty(catalog.Plugins);
        Assert.Single(_logger.Warnings);
        var ex = Assert.Throws<PluginLoadException>(() => catalog.Get<IProxyFactory>("udp"));
        Assert.Contains("available: none", ex.Message, StringComparison.Ordinal);
    }
}
