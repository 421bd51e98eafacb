<?xml version='1.0' encoding='utf-8'?>
<TS version="2.1" language="zh_CN">
<context>
    <name>DocumentChooser</name>
    <message>
        <location filename="../windows/dialogs.py" line="210" />
        <source>Documents for this conversation</source>
        <translation>本对话使用的文档</translation>
    </message>
</context>
<context>
    <name>DocumentsModel</name>
    <message>
        <location filename="../windows/documents_panel.py" line="17" />
        <source>queued</source>
        <translation>排队中</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="19" />
        <source>indexing {percent}%</source>
        <translation>索引中 {percent}%</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="21" />
        <source>indexed: {pages} pages, {chunks} chunks</source>
        <translation>已索引：{pages} 页，{chunks} 个片段</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="23" />
        <source>failed: {reason}</source>
        <translation>失败：{reason}</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="85" />
        <source>File</source>
        <translation>文件</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="86" />
        <source>Status</source>
        <translation>状态</translation>
    </message>
</context>
<context>
    <name>DocumentsPanel</name>
    <message>
        <location filename="../windows/documents_panel.py" line="133" />
        <source>Documents</source>
        <translation>文档</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="134" />
        <source>Drop files or folders anywhere on the window. Double-click a locked PDF to enter its password.</source>
        <translation>把文件或文件夹拖到窗口任意位置即可添加。双击加密的 PDF 可输入密码。</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="136" />
        <source>Add files…</source>
        <translation>添加文件…</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="137" />
        <source>Add folder…</source>
        <translation>添加文件夹…</translation>
    </message>
    <message>
        <location filename="../windows/documents_panel.py" line="138" />
        <source>Remove</source>
        <translation>移除</translation>
    </message>
</context>
<context>
    <name>MainWindow</name>
    <message>
        <location filename="../windows/main_window.py" line="185" />
        <source>AstrAI — offline assistant</source>
        <translation>AstrAI — 离线助手</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="186" />
        <source>Search conversations…</source>
        <translation>搜索对话…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="187" />
        <location filename="../windows/main_window.py" line="197" />
        <location filename="../windows/main_window.py" line="378" />
        <source>New chat</source>
        <translation>新对话</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="188" />
        <source>Documents:</source>
        <translation>文档：</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="189" />
        <source>all documents</source>
        <translation>全部文档</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="190" />
        <source>none</source>
        <translation>不使用</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="191" />
        <source>chosen documents</source>
        <translation>选定的文档</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="192" />
        <source>Choose…</source>
        <translation>选择…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="193" />
        <source>Ask anything — Enter sends, Shift+Enter adds a line</source>
        <translation>输入问题 — Enter 发送，Shift+Enter 换行</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="194" />
        <source>Editing an earlier message: sending replaces it and the answers after it.</source>
        <translation>正在编辑之前的消息：发送后将替换它以及之后的回答。</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="195" />
        <source>&amp;File</source>
        <translation>文件(&amp;F)</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="198" />
        <source>Add documents…</source>
        <translation>添加文档…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="199" />
        <source>Export conversation as Markdown…</source>
        <translation>将对话导出为 Markdown…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="200" />
        <source>Settings…</source>
        <translation>设置…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="201" />
        <source>Quit</source>
        <translation>退出</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="301" />
        <source>The model could not be loaded: {error}</source>
        <translation>无法加载模型：{error}</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="303" />
        <source>The document embedder could not be loaded: {error}</source>
        <translation>无法加载文档嵌入模型：{error}</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="308" />
        <source>Loading the model…</source>
        <translation>正在加载模型…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="311" />
        <source>Model: {name}</source>
        <translation>模型：{name}</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="313" />
        <source>Loading the document embedder…</source>
        <translation>正在加载文档嵌入模型…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="316" />
        <source>Indexing {count} document(s)…</source>
        <translation>正在索引 {count} 个文档…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="345" />
        <source>No model found: choose a model folder or GGUF file in &lt;a href="settings"&gt;Settings&lt;/a&gt;.</source>
        <translation>未找到模型：请在&lt;a href="settings"&gt;设置&lt;/a&gt;中选择模型文件夹或 GGUF 文件。</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="348" />
        <source>No font for Chinese text was found, so Chinese may show as empty boxes. Install Noto Sans CJK (Debian/Ubuntu: fonts-noto-cjk) or copy a .ttf/.otf font into {folder} and restart.</source>
        <translation>未找到中文字体，中文可能显示为方框。请安装 Noto Sans CJK（Debian/Ubuntu：fonts-noto-cjk），或把 .ttf/.otf 字体复制到 {folder} 后重启。</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="428" />
        <source>Rename…</source>
        <translation>重命名…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="429" />
        <source>Export as Markdown…</source>
        <translation>导出为 Markdown…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="430" />
        <source>Delete</source>
        <translation>删除</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="433" />
        <source>Rename conversation</source>
        <translation>重命名对话</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="433" />
        <source>Title:</source>
        <translation>标题：</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="440" />
        <source>Delete conversation</source>
        <translation>删除对话</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="441" />
        <source>Delete “{title}”?</source>
        <translation>删除“{title}”？</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="561" />
        <source>Waiting for a model (see Settings)…</source>
        <translation>等待选择模型（见设置）…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="569" />
        <source>Waiting for the model to load…</source>
        <translation>等待模型加载…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="570" />
        <source>Waiting for the document embedder to load…</source>
        <translation>等待文档嵌入模型加载…</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="610" />
        <source>(stopped)</source>
        <translation>（已停止）</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="612" />
        <source>(no relevant passage found)</source>
        <translation>（未找到相关段落）</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="614" />
        <source>{tokens} tokens, {speed:.1f} tokens/s</source>
        <translation>{tokens} 个词元，{speed:.1f} 词元/秒</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="623" />
        <source>The answer failed: {error}</source>
        <translation>回答失败：{error}</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="637" />
        <source>Stop</source>
        <translation>停止</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="637" />
        <source>Send</source>
        <translation>发送</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="638" />
        <source>Stop the answer (Esc)</source>
        <translation>停止回答（Esc）</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="638" />
        <source>Send (Enter)</source>
        <translation>发送（Enter）</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="655" />
        <source>You</source>
        <translation>你</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="655" />
        <source>AstrAI</source>
        <translation>AstrAI</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="655" />
        <source>Sources</source>
        <translation>来源</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="661" />
        <source>Export conversation</source>
        <translation>导出对话</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="662" />
        <source>Markdown (*.md)</source>
        <translation>Markdown (*.md)</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="667" />
        <source>Could not write {path}: {error}</source>
        <translation>无法写入 {path}：{error}</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="717" />
        <source>Indexing failed: {error}</source>
        <translation>索引失败：{error}</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="743" />
        <source>Password</source>
        <translation>密码</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="744" />
        <source>Password for {name}:</source>
        <translation>{name} 的密码：</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="751" />
        <source>Add documents</source>
        <translation>添加文档</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="752" />
        <source>Documents ({patterns})</source>
        <translation>文档 ({patterns})</translation>
    </message>
    <message>
        <location filename="../windows/main_window.py" line="757" />
        <source>Add a folder of documents</source>
        <translation>添加文档文件夹</translation>
    </message>
</context>
<context>
    <name>MessageWidget</name>
    <message>
        <location filename="../windows/chat_view.py" line="23" />
        <source>, p. {page}</source>
        <translation>，第 {page} 页</translation>
    </message>
    <message>
        <location filename="../windows/chat_view.py" line="125" />
        <source>You</source>
        <translation>你</translation>
    </message>
    <message>
        <location filename="../windows/chat_view.py" line="125" />
        <source>AstrAI</source>
        <translation>AstrAI</translation>
    </message>
    <message>
        <location filename="../windows/chat_view.py" line="126" />
        <source>Copy</source>
        <translation>复制</translation>
    </message>
    <message>
        <location filename="../windows/chat_view.py" line="127" />
        <source>Edit</source>
        <translation>编辑</translation>
    </message>
    <message>
        <location filename="../windows/chat_view.py" line="128" />
        <source>Regenerate</source>
        <translation>重新生成</translation>
    </message>
    <message>
        <location filename="../windows/chat_view.py" line="149" />
        <source>Sources:</source>
        <translation>来源：</translation>
    </message>
</context>
<context>
    <name>SettingsDialog</name>
    <message>
        <location filename="../windows/dialogs.py" line="23" />
        <source>Settings</source>
        <translation>设置</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="27" />
        <source>the shipped model</source>
        <translation>随附的模型</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="28" />
        <location filename="../windows/dialogs.py" line="66" />
        <source>Folder…</source>
        <translation>文件夹…</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="30" />
        <source>GGUF file…</source>
        <translation>GGUF 文件…</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="36" />
        <source>Model</source>
        <translation>模型</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="38" />
        <source>automatic</source>
        <translation>自动</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="39" />
        <source>Precision</source>
        <translation>精度</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="41" />
        <source>none</source>
        <translation>不使用</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="41" />
        <source>int8 (weights)</source>
        <translation>int8（权重）</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="41" />
        <source>int4 (weights)</source>
        <translation>int4（权重）</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="42" />
        <source>Quantization</source>
        <translation>量化</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="47" />
        <source>Temperature</source>
        <translation>温度</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="52" />
        <source>Top-p</source>
        <translation>Top-p</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="56" />
        <source>Max new tokens</source>
        <translation>最大生成词元数</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="59" />
        <source>System prompt</source>
        <translation>系统提示词</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="63" />
        <source>Sources per answer</source>
        <translation>每个回答的来源数</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="65" />
        <source>the bundled embedder</source>
        <translation>随附的嵌入模型</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="71" />
        <source>Embedder</source>
        <translation>嵌入模型</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="73" />
        <location filename="../windows/dialogs.py" line="76" />
        <source>follow the system</source>
        <translation>跟随系统</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="74" />
        <source>Language</source>
        <translation>界面语言</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="76" />
        <source>light</source>
        <translation>浅色</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="76" />
        <source>dark</source>
        <translation>深色</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="77" />
        <source>Appearance</source>
        <translation>外观</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="95" />
        <source>Choose a model folder</source>
        <translation>选择模型文件夹</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="100" />
        <source>Choose a sentence-transformers folder</source>
        <translation>选择 sentence-transformers 模型文件夹</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="105" />
        <source>Choose a GGUF file</source>
        <translation>选择 GGUF 文件</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="105" />
        <source>GGUF models (*.gguf)</source>
        <translation>GGUF 模型 (*.gguf)</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="113" />
        <source>Model not found: {path}</source>
        <translation>找不到模型：{path}</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="125" />
        <source>Invalid setting</source>
        <translation>无效的设置</translation>
    </message>
</context>
<context>
    <name>SourceDialog</name>
    <message>
        <location filename="../windows/dialogs.py" line="141" />
        <source>Source [{n}]</source>
        <translation>来源 [{n}]</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="142" />
        <source>, page {page}</source>
        <translation>，第 {page} 页</translation>
    </message>
    <message>
        <location filename="../windows/dialogs.py" line="146" />
        <source>Open file</source>
        <translation>打开文件</translation>
    </message>
</context>
</TS>